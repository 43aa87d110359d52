"""How likely the model finds a reference answer: the mean log-probability per answer token of `completion`
given `prompt` (both as the model sees them, chat template included by the caller).

One forward pass per batch and no generation, and continuous: a 135M student that gains 0 or 1 of five probes
after an update still moves this number, which is why the teacher's RL reward can use it (teacher/rewards.py).
"""
from __future__ import annotations

import torch

from student.sequences import collate, tokenize_pairs


@torch.inference_mode()
def answer_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                    max_len: int = 512) -> list[float]:
    """Per pair, the mean log p(answer token | prompt, earlier answer tokens), the end-of-text token included
    (a model that knows the answer also knows where it stops)."""
    seqs, prompt_lens = tokenize_pairs(tokenizer, pairs, max_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for i in range(0, len(seqs), batch_size):
            chunk, starts = seqs[i:i + batch_size], prompt_lens[i:i + batch_size]
            b = collate(chunk, pad)  # right-padded, as training reads sequences
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            for j, (s, start) in enumerate(zip(chunk, starts)):
                target = torch.tensor(s[start:], dtype=torch.long)
                got = logp[j, start - 1:len(s) - 1].gather(-1, target[:, None]).squeeze(-1)
                out.append(float(got.mean()))
    finally:
        if was_training:
            model.train()
    return out
