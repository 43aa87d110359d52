"""Is the teacher collapsing? Per round, how varied its self-edits are and how much the guard throws away.

A teacher rewarded on what the student learns can win by writing less, or by writing the same safe line for
every passage; these numbers make that visible next to the reward (RL rounds report them).
"""
from __future__ import annotations

import statistics
import zlib


def distinct_ngrams(texts: list[str], n: int) -> float:
    """Distinct word n-grams over all n-grams, pooled across texts (1.0: nothing repeats)."""
    grams = [tuple(w[i:i + n]) for w in (t.lower().split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def compression_ratio(texts: list[str]) -> float:
    """zlib-compressed size over raw size of the texts joined: lower means more repetition."""
    raw = "\n".join(texts).encode()
    return len(zlib.compress(raw, 9)) / len(raw) if raw else float("nan")


def edit_diversity(rows: list[dict]) -> dict:
    """From candidate rows ({"raw", "units", "dropped", "parsed"}): length, variety and the guard's share."""
    kept = [" ".join(r["units"]) for r in rows if r.get("units")]
    parsed = sum(r.get("parsed", 0) for r in rows)
    return {"mean_units": statistics.mean(len(r.get("units") or []) for r in rows) if rows else float("nan"),
            "mean_kept_words": statistics.mean(len(t.split()) for t in kept) if kept else 0.0,
            "distinct_1": distinct_ngrams(kept, 1), "distinct_2": distinct_ngrams(kept, 2),
            "compression_ratio": compression_ratio(kept),
            "guard_dropped_share": sum(r.get("dropped", 0) for r in rows) / parsed if parsed else float("nan")}
