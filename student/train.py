"""The training loop of one LoRA adapter: next-token loss on real tokens, completion-only pairs, context
distillation and retention (KL to the untouched model) in one batch stream."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from core.settings.student import TrainSettings
from student.sequences import collate, epoch_batches, tokenize_pairs, tokenize_sequences
from student.soft_targets import SoftTarget, soft_loss

if TYPE_CHECKING:
    from student.adapters import Student


@dataclass
class TrainStats:
    adapter: str
    sequences: int
    steps: int
    real_tokens: int
    pad_tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return (self.real_tokens + self.pad_tokens) / self.seconds if self.seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        total = self.real_tokens + self.pad_tokens
        return self.pad_tokens / total if total else 0.0

    def summary(self) -> dict:
        first = sum(self.losses[:5]) / max(1, len(self.losses[:5]))
        last = sum(self.losses[-5:]) / max(1, len(self.losses[-5:]))
        return dict(
            adapter=self.adapter, sequences=self.sequences, steps=self.steps, real_tokens=self.real_tokens,
            pad_tokens=self.pad_tokens, seconds=round(self.seconds, 3), tokens_per_s=round(self.tokens_per_s, 1),
            padding_fraction=round(self.padding_fraction, 4), loss_first=round(first, 4), loss_last=round(last, 4),
        )


def train_adapter(
    student: "Student", texts: list[str], name: str, seed: int, *, settings: TrainSettings | None = None,
    progress: bool = False, desc: str | None = None, stack: list[str] | tuple[str, ...] = (),
    pairs: list[tuple[str, str]] | None = None, soft: list[SoftTarget] | None = None,
    retain: list[SoftTarget] | None = None,
) -> TrainStats:
    """LoRA SFT of a fresh adapter: next-token loss on real tokens only (padding is masked out).

    With `stack`, those adapters stay active (the new one learns on top of them) but frozen. With `pairs`
    (prompt, completion), only completion tokens carry loss (chat QA, teacher training). `soft` examples are
    matched to a reference distribution (context distillation; with `settings.loss == "both"` their
    completion tokens also carry next-token loss). With `retain` and `settings.retain.weight > 0`, every
    step adds that weight x the KL to the untouched model on `retain.per_step` neutral prompts.
    """
    s = settings or student.settings
    seqs: list[list[int]] = []
    prompt_lens: list[int] = []
    if pairs:
        seqs, prompt_lens = tokenize_pairs(student.tokenizer, pairs, s.max_seq_len)
    if texts:
        extra = tokenize_sequences(student.tokenizer, texts, s.max_seq_len)
        seqs, prompt_lens = seqs + extra, prompt_lens + [0] * len(extra)
    soft = list(soft or [])
    if not seqs and not soft:
        raise ValueError("no training sequences")
    use_retain = bool(retain) and s.retain.weight > 0
    student.add_adapter(name, seed, s)
    peft = student.peft
    if stack:
        student.set_active([*stack, name])
    params = []
    for n, p in peft.named_parameters():
        own = "lora_" in n and f".{student.peft_name(name)}." in n
        p.requires_grad_(own)  # peft leaves other adapters trainable when several exist: freeze explicitly
        if own:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    rng = random.Random(seed)
    # one list of units: hard sequences first, then soft targets; batches may mix both
    lengths = [len(x) for x in seqs] + [len(t.ids) for t in soft]
    n_units = len(lengths)
    per_epoch = math.ceil(n_units / s.batch_size)
    total = per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda step: 1.0 - step / total) if s.schedule == "linear" else (lambda step: 1.0)
    )
    stats = TrainStats(name, n_units, 0, 0, 0, 0.0)
    pad_id = student.tokenizer.pad_token_id
    peft.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=desc or f"train {name}", disable=not progress, unit="step", leave=False)
    try:
        for _ in range(s.epochs):
            for idx in epoch_batches(n_units, lengths, s.batch_size, rng):
                hard = [i for i in idx if i < len(seqs)]
                parts, main = [], 0.0
                if hard:
                    b = collate([seqs[i] for i in hard], pad_id, [prompt_lens[i] for i in hard])
                    out = peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels)
                    parts.append((out.loss, len(hard)))
                    stats.real_tokens += b.real_tokens
                    stats.pad_tokens += b.pad_tokens
                chosen = [soft[i - len(seqs)] for i in idx if i >= len(seqs)]
                if chosen:
                    parts.append((soft_part(peft, chosen, s, pad_id, stats), len(chosen)))
                loss = sum(l * w for l, w in parts) / sum(w for _, w in parts)
                main = float(loss.detach())
                if use_retain:
                    pick = rng.sample(range(len(retain)), min(s.retain.per_step, len(retain)))
                    loss = loss + s.retain.weight * retain_part(peft, [retain[i] for i in pick], s, pad_id,
                                                                      stats)
                loss.backward()
                if s.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                stats.steps += 1
                stats.losses.append(main)
                bar.update(1)
                bar.set_postfix(loss=f"{stats.losses[-1]:.3f}")
    finally:
        bar.close()
        peft.eval()
        for p in params:
            p.requires_grad_(False)
    stats.seconds = time.perf_counter() - t0
    return stats

def soft_part(peft, chosen: list[SoftTarget], s: TrainSettings, pad_id: int, stats: TrainStats):
    """Context distillation on QA targets; with loss 'both', plus next-token loss on the same answers."""
    if s.loss == "distill":
        kl, real = soft_loss(peft, chosen, pad_id)
        stats.real_tokens += real
        return kl
    if s.loss == "both":  # one forward pass for both terms
        kl, nll, real = soft_loss(peft, chosen, pad_id, with_nll=True)
        stats.real_tokens += real
        return kl + nll
    b = collate([list(t.ids) for t in chosen], pad_id, [t.start for t in chosen])
    stats.real_tokens += b.real_tokens
    return peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss

def retain_part(peft, chosen: list[SoftTarget], s: TrainSettings, pad_id: int, stats: TrainStats):
    if s.retain.mode == "kl":
        kl, real = soft_loss(peft, chosen, pad_id)
        stats.real_tokens += real
        return kl
    b = collate([list(t.ids) for t in chosen], pad_id, [t.start for t in chosen])
    stats.real_tokens += b.real_tokens
    return peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
