"""Soft targets: a reference model's next-token distributions over chosen positions of a sequence, kept
sparse (top-k plus one bucket for the rest), and the KL that pulls a student toward them.

Two uses share this: *context distillation* (the reference is the untouched model reading the document in
its prompt; the student sees only the question) and *retention* (the reference is the untouched model on
neutral prompts; the student is kept close to it while it learns). The same KL, measured instead of
minimised, is the *drift* of a version from the base model.

KL is computed over k+1 bins (the reference's top-k tokens and everything else lumped together), which is a
lower bound of the full KL that needs k numbers per position instead of the whole vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.io import atomic_save
from student.generation import SamplingParams, generate, render_prompt
from student.sequences import collate

EPS = 1e-8


@dataclass(frozen=True)
class SoftTarget:
    """`ids` is what the student reads; positions `start..len(ids)-1` carry the reference's distribution over
    the token at that position (so the logits used are those at `start-1 .. len(ids)-2`)."""

    ids: tuple[int, ...]
    start: int
    topk_ids: torch.Tensor  # [T, k] long, T = len(ids) - start
    topk_logp: torch.Tensor  # [T, k] float32
    temperature: float = 1.0  # the reference's log-probs are of logits / temperature; the student's are too

    def __post_init__(self):
        if not 0 < self.start < len(self.ids):
            raise ValueError(f"start {self.start} outside 1..{len(self.ids) - 1}")
        if self.topk_ids.shape[0] != len(self.ids) - self.start:
            raise ValueError("one row of reference log-probs per target position is needed")


@dataclass(frozen=True)
class ReferenceItem:
    """The reference model reads `ref_prompt + completion`; the student will read `student_prompt +
    completion`. The completion's tokens are where the two are compared."""

    ref_prompt: tuple[int, ...]
    student_prompt: tuple[int, ...]
    completion: tuple[int, ...]


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = collate(rows, pad_id)  # the training batcher's padding; its labels are not needed here
    return b.input_ids, b.attention_mask


def _common_prefix(rows: list[tuple[int, ...]]) -> int:
    n = min(len(r) for r in rows)
    first = rows[0]
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


@torch.no_grad()  # not inference_mode: these tensors are later used in losses that autograd tracks
def reference_targets(model, items: list[ReferenceItem], pad_id: int, k: int = 64,
                      batch_size: int = 8, temperature: float = 1.0, share_prefix: int = 64) -> list[SoftTarget]:
    """Run the reference model once over each item and keep its top-k log-probs on the completion tokens
    (of its logits softened by `temperature`: above 1 the student also learns the reference's runners-up).
    When the reference prompts share a prefix of at least `share_prefix` tokens (one document read before many
    questions), the prefix is read once and its key/value cache reused for every item."""
    out: list[SoftTarget] = []
    was_training = model.training
    model.eval()
    prompts = [tuple(it.ref_prompt) for it in items]
    lcp = _common_prefix(prompts) if len(items) > 1 else 0
    lcp = min(lcp, min(len(p) for p in prompts) - 1) if items else 0  # every item keeps a token of its own
    try:
        cache = None
        if share_prefix and lcp >= share_prefix:
            cache = model(input_ids=torch.tensor([prompts[0][:lcp]]), use_cache=True).past_key_values
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            if cache is None:
                rows = [list(it.ref_prompt) + list(it.completion) for it in chunk]
                ids, mask = _right_pad(rows, pad_id)
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                starts = [len(it.ref_prompt) for it in chunk]
            else:
                import copy

                rows = [list(it.ref_prompt[lcp:]) + list(it.completion) for it in chunk]
                ids, mask = _right_pad(rows, pad_id)
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(chunk))
                full_mask = torch.cat([torch.ones(len(chunk), lcp, dtype=mask.dtype), mask], dim=1)
                pos = (lcp + torch.arange(ids.shape[1])).unsqueeze(0).expand(len(chunk), -1)
                logits = model(input_ids=ids, attention_mask=full_mask, position_ids=pos,
                               past_key_values=past, use_cache=True).logits.float()
                starts = [len(it.ref_prompt) - lcp for it in chunk]
            for j, it in enumerate(chunk):
                p0, n = starts[j], len(it.completion)
                logp = torch.log_softmax(logits[j, p0 - 1 : p0 - 1 + n] / temperature, dim=-1)
                top = logp.topk(min(k, logp.shape[-1]), dim=-1)
                out.append(SoftTarget(tuple(it.student_prompt) + tuple(it.completion), len(it.student_prompt),
                                      top.indices.clone(), top.values.clone(), temperature))
    finally:
        if was_training:
            model.train()
    return out


def sparse_kl(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logp: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """KL(reference || student) per position over k+1 bins; `logits` are the student's [T, V], softened by the
    temperature the reference was (the KL is then scaled by T^2, so gradients keep their size across T)."""
    logq = torch.log_softmax(logits.float() / temperature, dim=-1)
    q_k = logq.gather(-1, topk_ids)
    p = topk_logp.exp()
    p_rest = (1 - p.sum(-1)).clamp_min(EPS)
    q_rest = (1 - q_k.exp().sum(-1)).clamp_min(EPS)
    kl = (p * (topk_logp - q_k)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())
    return kl * temperature**2 if temperature != 1.0 else kl


def soft_loss(model, targets: list[SoftTarget], pad_id: int, with_nll: bool = False):
    """Mean KL over every target position of a batch of soft targets (one forward pass); returns the loss
    and the number of real tokens read. `with_nll`: also the next-token loss on the same target tokens, from
    the same forward pass (returns (kl, nll, tokens))."""
    ids, mask = _right_pad([list(t.ids) for t in targets], pad_id)
    logits = model(input_ids=ids, attention_mask=mask).logits
    spans = [logits[j, t.start - 1 : len(t.ids) - 1] for j, t in enumerate(targets)]
    kls = [sparse_kl(x, t.topk_ids, t.topk_logp, t.temperature) for x, t in zip(spans, targets)]
    kl = torch.cat(kls).mean()
    if not with_nll:
        return kl, int(mask.sum())
    gold = torch.cat([torch.tensor(t.ids[t.start:], dtype=torch.long) for t in targets])
    nll = torch.nn.functional.cross_entropy(torch.cat(spans).float(), gold)
    return kl, nll, int(mask.sum())


@torch.inference_mode()
def mean_kl(model, targets: list[SoftTarget], pad_id: int, batch_size: int = 8) -> float:
    """Drift: the mean over all target positions of KL(reference || model)."""
    total, n = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(targets), batch_size):
            chunk = targets[i : i + batch_size]
            ids, mask = _right_pad([list(t.ids) for t in chunk], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            for j, t in enumerate(chunk):
                kl = sparse_kl(logits[j, t.start - 1 : len(t.ids) - 1], t.topk_ids, t.topk_logp)
                total += float(kl.sum())
                n += kl.numel()
    finally:
        if was_training:
            model.train()
    return total / n if n else 0.0


def token_ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def base_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    outs = generate(model, tokenizer, prompts, SamplingParams(max_new_tokens=max_new_tokens), batch_size=batch_size)
    return [o[0] for o in outs]


def neutral_targets(model, tokenizer, prompts: list[str], max_new_tokens: int, k: int,
                    cache: Path | None = None) -> list[SoftTarget]:
    """The untouched model's own greedy answers to neutral prompts and its distributions over them (the
    reference for retention while training and for drift afterwards). Cached on disk: same weights, same
    prompts, same settings give the same targets."""
    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=False)
    answers = base_answers(model, tokenizer, prompts, max_new_tokens)
    eos = tokenizer.eos_token_id
    items = []
    for p, a in zip(prompts, answers):
        prompt = token_ids(tokenizer, render_prompt(tokenizer, p))
        ids = token_ids(tokenizer, a)[:max_new_tokens]
        completion = ids + ((eos,) if len(ids) < max_new_tokens - 1 else ())  # eos only where the base stopped
        items.append(ReferenceItem(prompt, prompt, completion))
    targets = reference_targets(model, items, tokenizer.pad_token_id, k=k)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(cache, lambda tmp: torch.save(targets, tmp))
    return targets
