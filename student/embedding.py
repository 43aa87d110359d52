"""Document embeddings from the base model itself (mean-pooled last hidden state): no second model to ship,
good enough to find which past documents are nearest to a new one."""
from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def embed(student, texts: list[str], max_len: int = 256) -> np.ndarray:
    tok = student.tokenizer
    out = []
    with student.use(None) as m:
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=max_len, add_special_tokens=False)
            h = m(**enc, output_hidden_states=True).hidden_states[-1][0]
            v = h.mean(0).float().numpy()
            out.append(v / (np.linalg.norm(v) + 1e-8))
    return np.stack(out).astype(np.float32)
