"""The paper's continual protocol: sequences of passages learned one by one, with the forgetting ledger.

For each sequence (disjoint passages drawn with the sequence's seed from --passages), a fresh student state
learns the passages in order with the chosen configuration, then every passage's questions are asked of the
final version. Per sequence it writes the ledger, the final accuracies and the untouched model's accuracies
(same questions, same run); sequences already written are skipped on a rerun (resume).

Modes:
  naive   stacked adapters, no replay, no gate
  merge   each adapter merged into the weights before the next (the paper's continual run)
  old-ours  the best mode before the canary issue: today's inner loop + replay of 4 earlier documents + the
            gate on document probes only
  ours    the config as given (configs/default.yaml is the default learning mode; override with --set)
  routed  the config as given with routed adapters (serving/routing.py)

Every mode measures the general-capability canary and drift after each update (the gate acts on them only
where it is enabled); per sequence the prod canary after every update is written as a curve.

Which questions the gate sees (--probes), and which are reported:
  self   the learner gets each passage without its questions, so the teacher writes the gate's probes (what a
         user's document without questions gets); every gold question is reported, none was seen (default)
  half   the learner gets a seeded half of the gold questions as probes; the other half is reported
  given  the learner gets every gold question and they are reported too (the old, circular protocol)
Reported (held-out) accuracy is measured as served: prod, routed among every document it holds, right after
each update (diag) and at the end of the sequence (final); BWT = mean(final - diag) on the same questions.

    python bench/continual.py --config configs/default.yaml --mode ours --sequences 4 --length 8 --out DIR

Ends with `RESULT mode=... final_avg=... base_avg=... bwt=... diag=...` (means over sequences).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TODAY_TRAIN = {"rank": 32, "alpha": 64, "learning_rate": 1e-3, "epochs": 10, "loss": "nll", "retain": {"weight": 0.0}}
# mode -> overrides of the config's `continual` and `train` sections
MODE_SETTINGS = {
    # the regime before the canary issue: self-edits as raw text, no retention, a plain stack, no gate
    "naive": {"continual": {"train_on": "self-edit", "replay": {"docs": 0}, "gate": {"enabled": False},
                            "merge_each_update": False, "routing": {"enabled": False},
                            "consolidation": {"every": 0, "max_depth": 8, "into": "adapter"}},
              "train": TODAY_TRAIN},
    "merge": {"continual": {"train_on": "self-edit", "replay": {"docs": 0}, "gate": {"enabled": False},
                            "merge_each_update": True, "routing": {"enabled": False}}, "train": TODAY_TRAIN},
    # the best mode before the canary issue (configs/continual-ours.yaml): replay 4 + gate on document probes
    "old-ours": {"continual": {"train_on": "self-edit", "replay": {"docs": 4}, "routing": {"enabled": False},
                               "gate": {"enabled": True, "min_gain": 0.0, "max_canary_drop": None,
                                        "max_drift": None}},
                 "train": TODAY_TRAIN},
    "ours": {},  # the config as given (configs/default.yaml: the default learning mode)
    # the config as given with routed adapters (each document's adapter alone, applied to its questions only)
    "routed": {"continual": {"routing": {"enabled": True}}},
}


def apply_mode(cfg, mode: str):
    over = MODE_SETTINGS[mode]
    sections = {}
    for name in ("continual", "train"):
        if name not in over:
            continue
        cur = getattr(cfg, name).model_dump()
        for k, v in over[name].items():
            cur[k] = {**cur[k], **v} if isinstance(v, dict) and isinstance(cur.get(k), dict) else v
        sections[name] = cur
    return cfg.with_overrides(**sections) if sections else cfg


def pick_sequences(passages, n_seq: int, length: int, seed: int):
    pool = [p for p in passages if p.questions]
    rng = random.Random(seed)
    rng.shuffle(pool)
    if n_seq * length > len(pool):
        raise SystemExit(f"need {n_seq * length} passages with questions, have {len(pool)}")
    return [pool[i * length:(i + 1) * length] for i in range(n_seq)]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _resumable(partial: Path, state: Path, seq, mode: str, probes: str) -> list[dict]:
    """The updates of a sequence cut short, when its state survived and it is the same sequence; merge mode edits
    the weights in memory, so it always restarts clean. An update interrupted midway is redone by the learner,
    which finds its own half-done attempt (a job delivered twice does its work once)."""
    if mode == "merge" or not partial.exists() or not (state / "memory.sqlite").exists():
        return []
    d = json.loads(partial.read_text())
    return d["updates"] if d.get("docs") == [p.doc_id for p in seq] and d.get("mode", mode) == mode \
        and d.get("probes", "given") == probes and "base_held" in d else []


def split_probes(p, how: str, seed: int):
    """(what the learner gets, the questions reported): see --probes."""
    from core.documents import Passage

    qs = list(p.questions)
    if how == "given":
        return p, qs
    if how == "self":
        return Passage(p.title, p.context, ()), qs
    order = list(range(len(qs)))
    random.Random(f"{seed}:{p.doc_id}").shuffle(order)
    gate = sorted(order[: len(qs) // 2])
    if not gate:  # a single question: report it, gate on self-written probes
        return Passage(p.title, p.context, ()), qs
    return Passage(p.title, p.context, tuple(qs[i] for i in gate)), [qs[i] for i in sorted(order[len(qs) // 2:])]


def held_out(lr, reported: dict, docs: list) -> dict[str, float]:
    """Containment on the reported questions of `docs`, asked of prod as served (routed among its documents)."""
    from core.documents import Passage
    from evaluation.closed_book import evaluate_passage
    from student.stack import load_version

    prod = lr.prod()
    names = load_version(lr.stack, lr.student, prod) if prod and prod.adapters else []
    target = (lr.routing(prod, names) or names or None) if names else None
    out = {}
    for p in docs:
        q = Passage(p.title, p.context, tuple(reported[p.doc_id]))
        g = evaluate_passage(lr.student, target, q, lr.cfg.eval.max_new_tokens, lr.cfg.eval.batch_size)
        out[p.doc_id] = sum(x.contains for x in g) / max(1, len(g))
    return out


def run_sequence(cfg, mode: str, seq, out: Path, seq_idx: int, probes: str = "self") -> dict:
    from evaluation.closed_book import evaluate_passage
    from agent.continual import ContinualLearner, forgetting_report
    from student.runtime import open_runtime
    from memory.store import MemoryStore
    from student.stack import StackStore

    import shutil

    state = out / f"seq{seq_idx}-state"
    partial = out / f"seq{seq_idx}.partial.json"
    updates = _resumable(partial, state, seq, mode, probes)
    if not updates:
        shutil.rmtree(state, ignore_errors=True)
    rt = open_runtime(cfg)  # fresh base per sequence (merge mode edits the weights)
    lr = ContinualLearner(rt.student, cfg, StackStore(state / "stack"), MemoryStore(state / "memory.sqlite"))
    t0 = time.perf_counter()
    split = {p.doc_id: split_probes(p, probes, cfg.seed) for p in seq}
    reported = {d: qs for d, (_, qs) in split.items()}
    base_held = held_out(lr, reported, seq) if not updates else None
    if not updates:
        lr.measure_base([split[p.doc_id][0] for p in seq])
    else:
        print(f"  seq {seq_idx}: resuming after {len(updates)} updates", flush=True)
        base_held = json.loads(partial.read_text()).get("base_held")
    for i, p in enumerate(seq):
        if i < len(updates):
            continue
        r = lr.learn(split[p.doc_id][0], seed=cfg.seed + 1000 * seq_idx + i)
        diag_held = held_out(lr, reported, [p])[p.doc_id]
        prod = lr.prod()
        g = lr.memory.general()
        prod_canary = g.get(prod.version if prod else 0, g.get(0, {})).get("canary")
        updates.append({"doc": p.doc_id, "version": r.version, "status": r.status, "reason": r.reason,
                        "before": r.before, "after": r.after, "forgetting": r.forgetting, "seconds": r.seconds,
                        "candidates": r.candidate_terms, "canary": r.canary, "drift": r.drift,
                        "canary_base": r.canary_base, "prod_canary": prod_canary, "attempts": r.attempts,
                        "diag_held": diag_held, "probe_source": r.probe_source})
        print(f"  seq {seq_idx} [{i}] {r.status:8s} probes {r.before:.2f} -> {r.after:.2f} held-out {diag_held:.2f} "
              f"forgetting {r.forgetting:.2f} canary {_pct(r.canary)} (prod {_pct(prod_canary)}) "
              f"drift {r.drift if r.drift is not None else float('nan'):.4f} ({r.seconds['total']:.0f}s) {r.reason}",
              flush=True)
        # the curve so far survives a run cut short, and a rerun resumes from the state beside it
        tmp = partial.with_suffix(".tmp")
        tmp.write_text(json.dumps({"docs": [p.doc_id for p in seq], "mode": mode, "updates": updates,
                                   "base_held": base_held, "probes": probes}, indent=2))
        tmp.replace(partial)
    prod = lr.prod()
    names = [a.id for a in prod.adapters] if prod else []
    if prod and names:
        from student.stack import load_version

        names = load_version(lr.stack, lr.student, prod)
    routing = lr.routing(prod, names)
    final = held_out(lr, reported, seq)
    unrouted = None
    if routing is not None and lr.general is not None:  # the weights with every adapter on, routing aside
        unrouted = lr.general.measure(lr.student, names).canary.accuracy
    if routing is not None:
        routed_share = {"docs": statistics.mean(
            r.doc_id is not None for p in seq for r in routing.routes([q.question for q in p.questions])),
            "canary": statistics.mean(r.doc_id is not None for r in routing.routes(
                [c.question for c in lr.general.items])) if lr.general is not None else None,
            "threshold": routing.router.threshold}
    else:
        routed_share = None
    base = base_held
    rep = forgetting_report(lr.memory)
    diag = {u["doc"]: u["diag_held"] for u in updates}
    nq = {d: len(qs) for d, qs in reported.items()}
    qw = lambda accs: sum(accs[d] * nq[d] for d in accs) / sum(nq[d] for d in accs)  # noqa: E731
    return {
        "mode": mode, "sequence": seq_idx, "docs": [p.doc_id for p in seq],
        "final_avg": statistics.mean(final.values()), "base_avg": statistics.mean(base.values()),
        "final_avg_q": qw(final), "base_avg_q": qw(base),
        "probes": probes, "reported": "every gold question (none seen by the gate)" if probes == "self" else
        "the half of the gold questions the gate did not see" if probes == "half" else "the gate's own probes",
        "diag": statistics.mean(diag.values()), "diag_probes": statistics.mean(u["after"] for u in updates),
        "bwt_held": statistics.mean(final[d] - diag[d] for d in diag),
        "refused": sum(u["status"] != "promoted" for u in updates) / max(1, len(updates)),
        "canary_base": updates[0]["canary_base"] if updates else None,
        "canary_curve": [u["prod_canary"] for u in updates],
        "canary_final": updates[-1]["prod_canary"] if updates else None,
        "canary_retention": (updates[-1]["prod_canary"] / updates[0]["canary_base"]
                             if updates and updates[0]["canary_base"] and updates[-1]["prod_canary"] is not None
                             else None),
        "canary_unrouted_final": unrouted, "routed_share": routed_share,
        "bwt": rep.final_bwt, "bwt_probes": rep.final_bwt,
        "promoted": sum(u["status"] == "promoted" for u in updates),
        "final": final, "base": base, "updates": updates, "ledger": rep.to_json(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summarize(rows: list[dict]) -> dict:
    def ms(key):
        xs = [r[key] for r in rows if r.get(key) is not None]
        return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (float("nan"), 0.0)

    return {k: ms(k) for k in ("final_avg", "base_avg", "bwt_held", "diag", "promoted", "refused", "seconds",
                               "canary_final", "canary_retention")} | {"n": len(rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--mode", choices=sorted(MODE_SETTINGS), default="ours")
    ap.add_argument("--passages", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--only", type=int, nargs="*", help="run only these sequence indices (parallel workers)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--probes", choices=("self", "half", "given"), default="self",
                    help="what the gate sees: self-written probes (default), half the gold questions, or all")
    args = ap.parse_args(argv)

    from core.config import apply_sets
    from core.config import load_config
    from core.documents import load_passages

    cfg = apply_sets(load_config(args.config), args.set)
    cfg = apply_mode(cfg, args.mode)
    out = Path(args.out) / (args.mode if args.probes == "self" else f"{args.mode}-probes-{args.probes}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    seqs = pick_sequences(load_passages(args.passages), args.sequences, args.length, cfg.seed)
    for i, seq in enumerate(seqs):
        f = out / f"seq{i}.json"
        if f.exists() or (args.only is not None and i not in args.only):
            continue
        print(f"[{args.mode}] sequence {i}: {len(seq)} passages", flush=True)
        row = run_sequence(cfg, args.mode, seq, out, i, args.probes)
        f.write_text(json.dumps(row, indent=2))
        (out / f"seq{i}.partial.json").unlink(missing_ok=True)
    rows = [json.loads(f.read_text()) for f in sorted(out.glob("seq*.json")) if f.stem[3:].isdigit()]
    if not rows:
        return 0
    s = summarize(rows)
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    print(f"\nReported: held-out questions ({rows[0].get('reported', '?')}), as served.")
    print(f"\n| mode | sequences | final avg (ACC) | untouched | BWT | just-learned (diag) | promoted | refused | "
          f"canary after | canary / base |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode_dir in sorted(Path(args.out).iterdir()):
        if (mode_dir / "summary.json").is_file():
            m = json.loads((mode_dir / "summary.json").read_text())
            cell = lambda k: f"{m[k][0]:.3f} ± {m[k][1]:.3f}"  # noqa: E731
            if "bwt_held" not in m:
                continue  # a run from before the held-out protocol
            print(f"| {mode_dir.name} | {m['n']} | {cell('final_avg')} | {cell('base_avg')} | {cell('bwt_held')} | "
                  f"{cell('diag')} | {m['promoted'][0]:.1f} | {100 * m['refused'][0]:.0f}% | {cell('canary_final')} | "
                  f"{cell('canary_retention')} |")
    print(f"RESULT mode={args.mode} probes={args.probes} sequences={s['n']} final_avg={s['final_avg'][0]:.4f} "
          f"base_avg={s['base_avg'][0]:.4f} bwt={s['bwt_held'][0]:.4f} diag={s['diag'][0]:.4f} "
          f"refused={s['refused'][0]:.4f} "
          f"canary_final={s['canary_final'][0]:.4f} canary_retention={s['canary_retention'][0]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
