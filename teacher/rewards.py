"""From measured candidates to training data: the reward of a self-edit and which candidates win."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scored:
    doc_id: str
    k: int
    gain: float  # the student's probe accuracy after training on the self-edit minus before
    forgetting: float  # mean accuracy drop on replayed probes of other documents (0 when not measured)
    reward: float


def reward(gain: float, forgetting: float, retention_lambda: float, drift: float = 0.0, drift_lambda: float = 0.0,
           canary_drop: float = 0.0, canary_lambda: float = 0.0) -> float:
    """The paper rewards the gain alone; with lambdas > 0 a self-edit is worth less when the student it makes
    forgets other documents, drifts from the untouched model, or loses general questions (the canary). A canary
    that rose is noise on 151 questions, not a merit: it earns nothing, or a self-edit that taught the student
    nothing could win on it."""
    return gain - retention_lambda * forgetting - drift_lambda * drift - canary_lambda * max(0.0, canary_drop)


def select_winners(cands: list[Scored], selection: str, threshold: float) -> list[Scored]:
    """Per document: `best` keeps the single highest-reward candidate if it beats `threshold` (ties go to the
    lowest k, i.e. deterministically); `threshold` keeps every candidate above it."""
    by_doc: dict[str, list[Scored]] = {}
    for c in cands:
        by_doc.setdefault(c.doc_id, []).append(c)
    out = []
    for doc in by_doc:
        above = [c for c in sorted(by_doc[doc], key=lambda c: c.k) if c.reward > threshold]
        if not above:
            continue
        if selection == "best":
            out.append(max(above, key=lambda c: (c.reward, -c.k)))
        elif selection == "threshold":
            out += above
        else:
            raise ValueError(f"unknown selection {selection!r}")
    return out


def mean(xs: list[float]) -> float:
    """A mean that is NaN, not an error, for an empty set (a round with no winners, no emptied candidates)."""
    return sum(xs) / len(xs) if xs else float("nan")


def term_effect(rows: list[dict], term: str, lam: float, selection: str, threshold: float) -> dict:
    """Whom a penalty (forgetting, drift, canary_drop) would pick, from candidates measured with it (rows of
    candidates.jsonl, keyed by round and context): winners under reward = gain alone vs gain - lam x `term`
    (clamped at 0, as in `reward`)."""
    def scored(l: float) -> list[Scored]:
        return [Scored(f"{c['round']}|{c['doc_id']}", c["k"], c["gain"], c.get("forgetting", 0.0),
                       c["gain"] - l * max(0.0, c.get(term) or 0.0)) for c in rows]

    by = {(f"{c['round']}|{c['doc_id']}", c["k"]): c for c in rows}
    a = select_winners(scored(0.0), selection, threshold)
    b = select_winners(scored(lam), selection, threshold)
    ka, kb = {(w.doc_id, w.k) for w in a}, {(w.doc_id, w.k) for w in b}
    return {"term": term, "lambda": lam, "winners_gain_only": len(a), "winners": len(b),
            "contexts_changed": len({d for d, _ in ka ^ kb}),
            "gain_gain_only": mean([by[k]["gain"] for k in ka]), "gain": mean([by[k]["gain"] for k in kb]),
            "term_gain_only": mean([by[k].get(term) or 0.0 for k in ka]),
            "term_value": mean([by[k].get(term) or 0.0 for k in kb])}


def passage_control(rows: list[dict]) -> dict:
    """A free control inside a round: a candidate whose every line the guard dropped still trains on the passage
    (when `train.passage_in_training`), with its own seed, so it is a passage-only replicate on the same context.
    If kept edits gain no more than these, the winners were picked on probe noise, not on what the edit added.
    Rows are one round's candidates.jsonl rows; the paired figure uses contexts that have both kinds."""
    emptied = [c["gain"] for c in rows if not c["units"]]
    kept = [c["gain"] for c in rows if c["units"]]
    by: dict[str, tuple[list[float], list[float]]] = {}
    for c in rows:
        by.setdefault(c["doc_id"], ([], []))[0 if c["units"] else 1].append(c["gain"])
    diffs = [mean(k) - mean(e) for k, e in by.values() if k and e]
    return {"kept": len(kept), "kept_gain": mean(kept), "emptied": len(emptied), "emptied_gain": mean(emptied),
            "paired_contexts": len(diffs), "paired_diff": mean(diffs)}
