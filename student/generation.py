"""Batched prompt -> text generation on an in-process transformers model (chat-template aware)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    n: int = 1


def render_prompt(tokenizer, user_text: str) -> str:
    """Wrap a user message in the model's chat template; plain text + newline for models without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
        )
    return user_text.rstrip() + "\n"


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: list[str], params: SamplingParams, *, batch_size: int = 8, seed: int | None = None
) -> list[list[str]]:
    """Return, per prompt, `params.n` completions. Left padding keeps every row's generation aligned."""
    if seed is not None:
        torch.manual_seed(seed)
    rendered = [render_prompt(tokenizer, p) for p in prompts]
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[list[str]] = []
    try:
        for i in range(0, len(rendered), batch_size):
            chunk = rendered[i : i + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs = dict(
                max_new_tokens=params.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                num_return_sequences=params.n,
                repetition_penalty=params.repetition_penalty,
            )
            if params.temperature > 0:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for j in range(len(chunk)):
                outputs.append([t.strip() for t in texts[j * params.n : (j + 1) * params.n]])
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return outputs
