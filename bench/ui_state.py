"""A synthetic agent state for the audit page (issue 16): N documents, M student versions, no model needed.

Written through the agent's own stores (MemoryStore, JobStore tables, StackStore.commit), in the shape the
continual learner leaves: every learned document has a promoted version; some documents were refused first
(canary budget) and retried gentler within the same job; a few were never learnable; folds every few
promotions. The ledger is dense (the default monitor replays every past document's probes), so 500 documents
and 1,000 versions hold about 220,000 ledger rows: the worst case the page must stay fast on.

    .venv/bin/python bench/ui_state.py --state /tmp/ui-state --docs 500 --versions 1000
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

WORDS = ("amber harbour river quarry lantern meadow orchard glacier canyon beacon citadel delta estuary fjord "
         "granary highland island jetty kiln lagoon mill narrows observatory pavilion quay reef steppe terrace "
         "upland vineyard watermill yard zenith archive bridge causeway dockyard foundry garrison").split()
PLACES = ("Frell Quimby Ostrava Lund Tarragona Galway Bergen Kaunas Porto Split Trieste Utrecht Varna Zadar "
          "Aarhus Brno Cork Dundee Essen Faro Graz Hull Izmir Jena Kotor Linz Malmo Nantes Oulu Pula").split()


def _title(rng: random.Random, i: int) -> str:
    return f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} of {rng.choice(PLACES)} ({i + 1})"


def plan(n_docs: int, n_versions: int, seed: int = 0) -> list[dict]:
    """The sequence of versions: learn (promoted or rejected tries) and folds, exactly n_versions long."""
    rng = random.Random(seed)
    never = set(rng.sample(range(n_docs), max(1, n_docs // 50) if n_docs > 1 else 0))  # never learnable
    extra = n_versions - n_docs - len(never)  # versions beyond one per document: refused tries and folds
    if extra < 0:
        raise ValueError(f"{n_versions} versions are too few for {n_docs} documents")
    retried = set(rng.sample(sorted(set(range(n_docs)) - never), min(n_docs - len(never), (extra * 4) // 5)))
    folds = extra - len(retried)
    learned = n_docs - len(never)
    fold_after = {round((k + 1) * learned / (folds + 1)) for k in range(folds)} if folds else set()
    steps, promoted = [], 0
    for d in range(n_docs):
        if d in never:
            steps += [{"kind": "learn", "doc": d, "status": "rejected", "try": 1, "tries": 2},
                      {"kind": "learn", "doc": d, "status": "rejected", "try": 2, "tries": 2}]
            continue
        if d in retried:
            steps.append({"kind": "learn", "doc": d, "status": "rejected", "try": 1, "tries": 2})
        steps.append({"kind": "learn", "doc": d, "status": "promoted", "try": 2 if d in retried else 1,
                      "tries": 2 if d in retried else 1})
        promoted += 1
        if promoted in fold_after:
            steps.append({"kind": "fold"})
    while len(steps) < n_versions:  # rounding: the rest are folds at the end
        steps.append({"kind": "fold"})
    return steps[:n_versions]


def build(state: Path, n_docs: int = 500, n_versions: int = 1000, probes: int = 3, seed: int = 0,
          database: str | None = None) -> dict:
    """Write the state under `state` (memory.sqlite + stack/; or the tables in `database`, a PostgreSQL URL,
    as `continual.database` would); returns counts."""
    from sqlalchemy import insert as sql_insert

    from memory.jobs import EVENTS, JOBS, JobStore, _passage_json
    from core.documents import QA, Passage
    from memory.store import LEDGER, MemoryStore
    from student.stack import AdapterRef, StackStore

    state = Path(state)
    if (state / "memory.sqlite").exists() or (state / "stack").exists():
        raise SystemExit(f"{state} already holds a state; pick an empty folder")
    t_start = time.perf_counter()
    rng = random.Random(seed)
    target = database or state / "memory.sqlite"
    memory = MemoryStore(target)
    jobs = JobStore(target)
    stack = StackStore(state / "stack")
    docs = []
    for i in range(n_docs):
        title = _title(rng, i)
        place = title.split(" of ")[1].split(" (")[0]
        qas = tuple(QA(f"Question {k + 1} about {title}: what is recorded in {place}?", f"answer {i}-{k}")
                    for k in range(probes))
        docs.append(Passage(title, f"{title}. A synthetic passage {i} with facts about {place}.", qas))
    for p in docs:
        memory.add_document(p)
    # version 0: the untouched model (base accuracy per document, canary of the base)
    ledger_rows = []
    now = time.time() - 3600 * 24 * 3
    base_canary = 148
    memory.record_general(0, base_canary, 151, 0.0, {"synthetic": True})
    for p in docs:
        ledger_rows.append(dict(version=0, doc_id=p.doc_id, correct=float(rng.random() < 0.1), total=probes,
                                measured_at=now))
    learned_acc: dict[str, float] = {}  # doc -> accuracy when learned (decays with age)
    live: list[AdapterRef] = []
    prod = 0
    job_rows, event_rows = [], []
    job_of_doc: dict[int, dict] = {}
    steps = plan(n_docs, n_versions, seed)
    t = now
    for v, s in enumerate(steps, start=1):
        t += rng.uniform(60, 400)
        if s["kind"] == "fold":
            folded = AdapterRef(f"a{v:05d}", tuple(d for a in live for d in a.doc_ids), sum(a.rank for a in live),
                                "consolidated", {})
            n_live, live = len(live), [folded]
            stack.commit(live, prod or None, note=f"fold {n_live} adapters, rank {folded.rank}, rel error 0.0000",
                         move=())
            memory.record_update(v, None, prod, "consolidated", f"fold into a{v:05d}")
            g = memory.general().get(prod)
            if g is not None:
                memory.record_general(v, g["correct"], g["total"], g["drift"], g["info"])
            prod = v
            continue
        p = docs[s["doc"]]
        ref = AdapterRef(f"a{v:05d}", (p.doc_id,), 8, "lora", {})
        stack.commit([*live, ref], prod or None, note=f"learn {p.title[:60]}", move=())
        before = 0.0
        after = rng.choice((2, 3)) / probes if s["status"] == "promoted" else rng.choice((1, 2, 3)) / probes
        measured = {p.doc_id: after}
        drops = []
        for d, acc in learned_acc.items():
            new = max(0.0, acc - (1 / probes if rng.random() < 0.004 else 0.0))
            measured[d] = new
            drops.append(acc - new)
        for d, acc in measured.items():
            ledger_rows.append(dict(version=v, doc_id=d, correct=round(acc * probes), total=probes, measured_at=t))
        forgetting = sum(drops) / len(drops) if drops else 0.0
        canary = base_canary - (rng.choice((4, 5, 6)) if s["status"] == "rejected" else rng.choice((0, 0, 1, 2)))
        drift = round(rng.uniform(0.002, 0.02) * (3 if s["status"] == "rejected" else 1), 4)
        memory.record_general(v, canary, 151, drift, {"synthetic": True})
        drop = (base_canary - canary) / 151
        reason = "" if s["status"] == "promoted" else (
            f"canary drop {100 * drop:.1f} points > budget 2.0 (canary {100 * canary / 151:.1f}% vs untouched "
            f"{100 * base_canary / 151:.1f}%)")
        if s["status"] == "rejected" and s["try"] < s["tries"]:
            reason += f"; retrying with the delta x0.5 (try {s['try'] + 1} of 4)"
        elif s["status"] == "rejected":
            reason = f"not learnable within the budget after {s['tries']} tries: {reason}"
        result = {"doc_id": p.doc_id, "version": v, "parent": prod, "status": s["status"], "reason": reason,
                  "before": before, "after": after, "forgetting": forgetting, "replayed_docs": len(drops),
                  "probes": probes, "probe_source": "given", "canary": canary / 151, "canary_base": base_canary / 151,
                  "drift": drift, "seconds": {"probes": round(rng.uniform(1, 5), 2),
                                              "self_edit": round(rng.uniform(20, 60), 2),
                                              "train": round(rng.uniform(60, 240), 2),
                                              "monitor": round(rng.uniform(30, 120), 2)}}
        memory.record_update(v, p.doc_id, prod, s["status"], reason, after - before, forgetting, {"result": result})
        # the job: one per document, its tries inside it
        j = job_of_doc.setdefault(s["doc"], {"id": f"job_{seed:02d}{s['doc']:014x}", "tries": [], "t0": t})
        j["tries"].append(v)
        if s["try"] == s["tries"]:
            _job(j, p, result | {"name": f"student-v{v}", "gain": after - before,
                                 "canary_drop": drop, "replayed": False,
                                 "attempts": [{"version": x} for x in j["tries"][:-1]] or None},
                 s["status"], t, rng, job_rows, event_rows, _passage_json)
        if s["status"] == "promoted":
            live = [*live, ref]
            learned_acc = {d: a for d, a in measured.items()}
            memory.mark_learned(p.doc_id, v)
            prod = v
    with memory.engine.begin() as c:
        for k in range(0, len(ledger_rows), 5000):
            c.execute(sql_insert(LEDGER), ledger_rows[k:k + 5000])
    with jobs.engine.begin() as c:
        c.execute(sql_insert(JOBS), job_rows)
        c.execute(sql_insert(EVENTS), event_rows)
    if prod:
        stack.set_alias("prod", prod)
    stack.set_alias("latest", len(steps))
    memory.close()
    jobs.close()
    return {"documents": n_docs, "versions": len(steps), "ledger_rows": len(ledger_rows), "jobs": len(job_rows),
            "prod": prod, "seconds": round(time.perf_counter() - t_start, 1)}


def _job(j: dict, p, result: dict, state: str, t_end: float, rng, job_rows, event_rows, passage_json) -> None:
    t0 = j["t0"] - rng.uniform(5, 120)
    stages = [("queued", t0, "accepted"), ("writing_probes", j["t0"], ""),
              ("self_editing", j["t0"] + result["seconds"]["probes"], ""),
              ("training", j["t0"] + result["seconds"]["probes"] + result["seconds"]["self_edit"], ""),
              ("evaluating", t_end - result["seconds"]["monitor"], ""),
              (state, t_end, f"{state} student-v{result['version']}"
               + (f" ({result['reason']})" if result["reason"] else ""))]
    job_rows.append(dict(id=j["id"], doc_id=p.doc_id, title=p.title, passage=passage_json(p), idempotency_key=None,
                         state=state, attempts=1, cancel_requested=False, error=None, result=json.dumps(result),
                         created_at=t0, updated_at=t_end, started_at=j["t0"], finished_at=t_end))
    event_rows += [dict(job_id=j["id"], at=at, state=s, message=m) for s, at, m in stages]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", type=Path, required=True, help="an empty folder (becomes continual.state_dir)")
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--database", default=None, help="a postgresql:// URL instead of <state>/memory.sqlite")
    a = ap.parse_args()
    print(json.dumps(build(a.state, a.docs, a.versions, seed=a.seed, database=a.database)))


if __name__ == "__main__":
    main()
