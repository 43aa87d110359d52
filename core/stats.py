"""Passage-level bootstrap intervals: questions of one passage are correlated, so passages are resampled."""
from __future__ import annotations

import numpy as np


def _ratio(hits: np.ndarray, counts: np.ndarray) -> float:
    return float(hits.sum() / counts.sum()) if counts.sum() else float("nan")


def bootstrap_mean(per_passage: list[list[float]], n_boot: int = 2000, seed: int = 0) -> dict:
    """Question-weighted mean and a 95% percentile interval from resampling passages."""
    per_passage = [p for p in per_passage if p]
    if not per_passage:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_passages": 0, "n_questions": 0}
    hits = np.array([sum(p) for p in per_passage], dtype=float)
    counts = np.array([len(p) for p in per_passage], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(n_boot, len(hits)))
    boots = hits[idx].sum(1) / counts[idx].sum(1)
    return {
        "mean": _ratio(hits, counts), "lo": float(np.percentile(boots, 2.5)), "hi": float(np.percentile(boots, 97.5)),
        "n_passages": len(hits), "n_questions": int(counts.sum()),
    }


def paired_difference(a: list[list[float]], b: list[list[float]], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean(a) - mean(b) over the same passages and questions, with a paired passage bootstrap."""
    pairs = [(x, y) for x, y in zip(a, b) if x and y and len(x) == len(y)]
    if not pairs:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_passages": 0}
    ha = np.array([sum(x) for x, _ in pairs], dtype=float)
    hb = np.array([sum(y) for _, y in pairs], dtype=float)
    c = np.array([len(x) for x, _ in pairs], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(c), size=(n_boot, len(c)))
    boots = (ha[idx].sum(1) - hb[idx].sum(1)) / c[idx].sum(1)
    return {
        "diff": float((ha.sum() - hb.sum()) / c.sum()), "lo": float(np.percentile(boots, 2.5)),
        "hi": float(np.percentile(boots, 97.5)), "n_passages": len(c),
    }


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson correlation; nan when either side is constant."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy) if sx and sy else float("nan")


def ranks(v: list[float]) -> list[float]:
    """Ranks from 0, ties sharing their mean rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation (Pearson on tie-averaged ranks)."""
    return pearson(ranks(xs), ranks(ys))
