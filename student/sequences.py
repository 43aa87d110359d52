"""Tokenize training sequences and batch them with dynamic padding that the loss never sees."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch

IGNORE = -100
log = logging.getLogger(__name__)


def tokenize_sequences(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Raw text (no chat template, as in the paper's SFT), eos appended so the model learns where facts end. A
    text longer than the window is trained as consecutive windows, never cut: every token is learned (callers
    split documents into titled parts first, teacher.passages; this catches a part whose script the split
    under-counted)."""
    eos = tokenizer.eos_token_id
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
        if len(ids) > max_len:
            log.warning("a training sequence of %d tokens is longer than train.max_seq_len %d: trained as %d "
                        "consecutive windows", len(ids), max_len, -(-len(ids) // max_len))
        out += [ids[i:i + max_len] for i in range(0, len(ids), max_len)]
    return out


def tokenize_pairs(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> tuple[list[list[int]], list[int]]:
    """(prompt, completion) pairs for completion-only SFT: returns the token ids and, per row, how many leading
    tokens are prompt (they carry no loss). Prompts are rendered by the caller (chat template included)."""
    eos = tokenizer.eos_token_id
    seqs, prompt_lens = [], []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
        if len(p) >= max_len // 2 and len(p) + len(c) > max_len:
            # a long prompt (a gapped passage) would leave no room: keep its end, and the completion's start
            log.warning("a training pair of %d + %d tokens was cut to train.max_seq_len %d", len(p), len(c), max_len)
            p = p[-(max_len // 2):]
        ids = (p + c)[:max_len]
        seqs.append(ids)
        prompt_lens.append(len(p))
    return seqs, prompt_lens


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    real_tokens: int
    pad_tokens: int


def collate(seqs: list[list[int]], pad_id: int, prompt_lens: list[int] | None = None) -> Batch:
    """Right-padded batch; padding (and, with `prompt_lens`, each row's prompt) is masked out of the labels."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
    for i, n in enumerate(prompt_lens or []):
        labels[i, :n] = IGNORE
    real = int(mask.sum())
    return Batch(ids, mask, labels, real, ids.numel() - real)


def epoch_batches(n_items: int, lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then (for batch > 1) sort within windows of 8 batches by length so rows in a batch are similar
    in length and padding stays small, and finally shuffle the batch order again."""
    order = list(range(n_items))
    rng.shuffle(order)
    if batch_size == 1:
        return [[i] for i in order]
    window = batch_size * 8
    batches = []
    for w in range(0, n_items, window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
