"""Tokenize training sequences and batch them with dynamic padding that the loss never sees."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

IGNORE = -100


def tokenize_sequences(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Raw text (no chat template, as in the paper's SFT), eos appended so the model learns where facts end."""
    eos = tokenizer.eos_token_id
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"][: max_len - 1]
        out.append(ids + [eos])
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    real_tokens: int
    pad_tokens: int


def collate(seqs: list[list[int]], pad_id: int) -> Batch:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE)
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
