"""Learning regimes on two axes: what the student learned (closed-book accuracy on a document's gold
questions right after learning it) and what it kept (the general-capability canary and drift from the base).

Each (passage, regime) trains one fresh adapter on the untouched model, so regimes are compared on the same
passages and the same starting point. The untouched model is measured once per passage in the same run
(the baseline row). Rows are appended to results.jsonl as they finish (a rerun skips what is there; several
shards may share one folder), then a table, a Pareto plot (just-learned accuracy vs canary drop) and the
drift-vs-canary-drop correlation are written.

    python bench/regimes.py --out results/regimes --passages-n 8 [--shard 0/2] [--regimes today,qa-retain]

Ends with one `RESULT regime=... learned=... canary_drop=... drift=...` line per regime.
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

from core.stats import pearson, spearman  # noqa: E402

RETAIN = {"weight": 1.0, "per_step": 2, "mode": "kl", "question_format": False, "questions": False}  # neutral chat
RETAIN_QF = {**RETAIN, "question_format": True}  # ... and also in the closed-book question format
RETAIN_GQ = {**RETAIN_QF, "questions": True}  # ... plus short general questions (disjoint from the canary)
# name -> (continual.train_on, train overrides)
REGIMES: dict[str, tuple[str, dict]] = {
    "today": ("self-edit", {}),
    "passage": ("passage", {}),
    "gentle-lr": ("self-edit", {"learning_rate": 3e-4, "epochs": 5}),
    "gentle-qv-r8": ("self-edit", {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
    "retain-kl": ("self-edit", {"retain": RETAIN}),
    "retain-replay": ("self-edit", {"retain": {**RETAIN, "mode": "replay"}}),
    "qa": ("qa", {"epochs": 6}),
    "qa-retain": ("qa", {"epochs": 6, "retain": RETAIN}),
    "qa-distill-retain": ("qa", {"epochs": 6, "loss": "distill", "retain": RETAIN}),
    "qa-both-retain": ("qa", {"epochs": 6, "loss": "both", "retain": RETAIN}),
    "qa+passage-retain": ("qa+passage", {"epochs": 6, "retain": RETAIN}),
    "retain-kl-qf": ("self-edit", {"retain": RETAIN_QF}),
    "passage-kl-qf": ("passage", {"retain": RETAIN_QF}),
    "qa-distill-qf": ("qa", {"epochs": 6, "loss": "distill", "retain": RETAIN_QF}),
    "qa+passage-qf": ("qa+passage", {"epochs": 6, "retain": RETAIN_QF}),
    "retain-kl-qf-w3": ("self-edit", {"retain": {**RETAIN_QF, "weight": 3.0}}),
    "passage4-kl-qf": ("passage*4", {"retain": RETAIN_QF}),  # the passage 4x per epoch (40 steps)
    "passage4": ("passage*4", {}),
    "replay-qf": ("self-edit", {"retain": {**RETAIN_QF, "mode": "replay"}}),
    "mlp-kl-qf": ("self-edit", {"target_modules": ["gate_proj", "up_proj", "down_proj"], "retain": RETAIN_QF}),
    "passage4-kl-qf-w3": ("passage*4", {"retain": {**RETAIN_QF, "weight": 3.0}}),
    "passage4-replay-qf-w3": ("passage*4", {"retain": {**RETAIN_QF, "mode": "replay", "weight": 3.0}}),
    # one trained adapter measured at several scales of its delta (the gate's `rescale` retry): rows name@s
    "kl-qf-scaled": ("self-edit", {"retain": RETAIN_QF, "scales": [1.0, 0.5, 0.25]}),
    "today-scaled": ("self-edit", {"scales": [1.0, 0.5, 0.25, 0.125]}),
    "passage4-kl-qf-scaled": ("passage*4", {"retain": RETAIN_QF, "scales": [1.0, 0.5, 0.25]}),
}
REGIMES.update({
    "kl-gq": ("self-edit", {"retain": RETAIN_GQ, "scales": [1.0, 0.5]}),
    "kl-gq-ps4": ("self-edit", {"retain": {**RETAIN_GQ, "per_step": 4}, "scales": [1.0, 0.5]}),
    "passage4-kl-gq": ("passage*4", {"retain": RETAIN_GQ, "scales": [1.0, 0.5]}),
    "replay-gq": ("self-edit", {"retain": {**RETAIN_GQ, "mode": "replay"}, "scales": [1.0, 0.5]}),
})
NOT_TRAIN = ("retain", "scales")


def held_out(passages, n: int, seed: int, skip: int):
    """n passages with questions, drawn with `seed`, after the first `skip` of that draw (kept for others)."""
    pool = [p for p in passages if p.questions]
    random.Random(seed).shuffle(pool)
    return pool[skip: skip + n]


class Bench:
    def __init__(self, cfg, out: Path):
        from evaluation.canary import GeneralMonitor
        from student.runtime import open_runtime
        from teacher.writer import TeacherWriter

        self.cfg, self.out = cfg, out
        self.rt = open_runtime(cfg)
        st = self.rt.student
        rs = cfg.train.retain
        kinds = [(False, False), (True, False), (True, True)]  # (question_format, questions)
        self.monitors = {k: GeneralMonitor(cfg.continual.canary, rs.model_copy(
            update={"question_format": k[0], "questions": k[1]}), cfg.model.cache_dir) for k in kinds}
        for mon in self.monitors.values():
            mon.prepare(st)
        self.writer = TeacherWriter(st.model, st.tokenizer, cfg.teacher)
        self.self_edits: dict[str, list[str]] = {}

    def units(self, p, train_on: str, seed: int) -> list[str]:
        from agent.training_data import qa_units
        from teacher.self_edit import build_self_edit

        if train_on.startswith("passage"):
            copies = int(train_on.partition("*")[2] or 1)
            return [f"{p.title}\n{p.context}"] * copies
        if train_on == "self-edit":
            if p.doc_id not in self.self_edits:
                st = self.rt.student
                with st.use(None) as m:
                    raw = self.writer.sample_raw([p], seed=seed, model=m)[0]
                se = build_self_edit(p, raw, self.cfg.teacher.format, self.cfg.teacher.grounding)
                self.self_edits[p.doc_id] = se.sequences(p, self.cfg.train.passage_in_training)
            return self.self_edits[p.doc_id]
        qa = qa_units(p, self.cfg.continual.qa_pairs, seed)
        return qa + ([f"{p.title}\n{p.context}"] if train_on == "qa+passage" else [])

    def measure(self, adapter: str | None, p) -> dict:
        from evaluation.closed_book import evaluate_passage

        st = self.rt.student
        g = evaluate_passage(st, adapter, p, self.cfg.eval.max_new_tokens, self.cfg.eval.batch_size)
        t0 = time.perf_counter()
        gen = self.monitors[(True, True)].measure(st, [adapter] if adapter else None)
        return {"learned": sum(x.contains for x in g) / len(g), "recite": sum(x.recite for x in g) / len(g),
                "f1": sum(x.f1 for x in g) / len(g), "canary": gen.canary.accuracy, "drift": gen.drift,
                "canary_s": round(time.perf_counter() - t0, 1), "answers": [x.answer for x in g],
                "canary_by_kind": gen.canary.by_kind}

    def run(self, i: int, p, regime: str, seed: int) -> dict:
        from agent.training_data import build_mix

        st = self.rt.student
        if regime == "base":
            return self.measure(None, p)
        train_on, over = REGIMES[regime]
        s = self.cfg.train.model_copy(update={k: v for k, v in over.items() if k not in NOT_TRAIN})
        if "retain" in over:
            s = s.model_copy(update={"retain": s.retain.model_copy(update=over["retain"])})
        units = self.units(p, train_on, seed)
        with st.use(None) as m:
            mix = build_mix(units, st.tokenizer, s.loss, passage=p, model=m, k=s.retain.topk)
        retain = self.monitors[(s.retain.question_format, s.retain.questions)].retain_targets
        stats = st.train_adapter(mix.texts, "r", seed=seed, settings=s, pairs=mix.pairs or None, soft=mix.soft or None,
                                 retain=retain)
        extra = {"steps": stats.steps, "train_s": round(stats.seconds, 1), "units": len(mix)}
        try:
            if "scales" not in over:
                return self.measure("r", p) | extra
            rows, cur = {}, 1.0
            for scale in over["scales"]:
                st.scale_adapter("r", scale / cur)
                cur = scale
                rows[f"{regime}@{scale:g}"] = self.measure("r", p) | extra | {"scale": scale}
            return rows
        finally:
            st.drop("r")


def summarize(rows: list[dict], out: Path, eval_dir: Path | None = None) -> dict:
    base = {r["doc"]: r for r in rows if r["regime"] == "base"}
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r["regime"] != "base" and r["doc"] in base:
            by.setdefault(r["regime"], []).append(r | {"drop": base[r["doc"]]["canary"] - r["canary"]})
    summary = {}
    for name, rs in by.items():
        m = lambda k: statistics.mean(x[k] for x in rs)  # noqa: E731
        summary[name] = {"n": len(rs), "learned": m("learned"), "recite": m("recite"), "canary": m("canary"),
                         "canary_drop": m("drop"), "drift": m("drift"), "steps": m("steps"), "train_s": m("train_s")}
    if base:
        summary["base"] = {"n": len(base), "learned": statistics.mean(r["learned"] for r in base.values()),
                           "recite": statistics.mean(r["recite"] for r in base.values()),
                           "canary": statistics.mean(r["canary"] for r in base.values()), "canary_drop": 0.0,
                           "drift": statistics.mean(r["drift"] for r in base.values()), "steps": 0, "train_s": 0}
    pairs = [(x["drift"], x["drop"]) for rs in by.values() for x in rs]
    corr = None
    if len(pairs) > 2:
        corr = {"pearson": _pearson(pairs), "spearman": _spearman(pairs), "n": len(pairs)}
    (out / "summary.json").write_text(json.dumps({"regimes": summary, "drift_vs_canary_drop": corr}, indent=2))
    _plot(summary, by, out, _eval_points(eval_dir) if eval_dir else [])
    return {"regimes": summary, "corr": corr}


def _eval_points(eval_dir: Path) -> list[dict]:
    """`seal eval` conditions (its summary.json) as points on the same axes: the canary as served (routed) and,
    where measured, with the adapter on for every question (unrouted)."""
    s = json.loads((Path(eval_dir) / "summary.json").read_text())
    pts = []
    for name, c in s["conditions"].items():
        if c.get("canary_drop") is None:
            continue
        pts.append({"name": name, "n": s["passages"], "learned": c["contains"]["mean"], "drop": c["canary_drop"],
                    "unrouted": c.get("canary_drop_unrouted"), "n_unrouted": c.get("n_unrouted")})
    return pts


def _pearson(pairs):
    xs, ys = zip(*pairs)
    return pearson(list(xs), list(ys))


def _spearman(pairs):
    xs, ys = zip(*pairs)
    return spearman(list(xs), list(ys))


def _plot(summary: dict, by: dict, out: Path, eval_points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5))
    ax = axes[0]
    markers = "osDv<>ph*XP^d"
    for j, (name, s) in enumerate(sorted(summary.items())):  # a legend, not labels: the 2-passage points overlap
        ax.scatter(100 * s["canary_drop"], 100 * s["learned"], s=60, marker="s" if name == "base" else markers[j % 13],
                   label=f"{name} ({s['n']} docs, unrouted)")
    for e in eval_points:  # seal eval on its own passages (routed as served; hollow: every question meets it)
        ax.scatter(100 * e["drop"], 100 * e["learned"], s=70, marker="^", color="tab:green")
        ax.annotate(f"{e['name']} routed ({e['n']} docs)", (100 * e["drop"], 100 * e["learned"]),
                    textcoords="offset points", xytext=(5, -10), fontsize=8, color="tab:green")
        if e["unrouted"] is not None:
            ax.scatter(100 * e["unrouted"], 100 * e["learned"], s=70, marker="^", facecolors="none",
                       edgecolors="tab:green")
            ax.annotate(f"{e['name']} unrouted ({e['n_unrouted']} docs)", (100 * e["unrouted"], 100 * e["learned"]),
                        textcoords="offset points", xytext=(5, -10), fontsize=7, color="tab:green")
    ax.set_xlabel("canary drop after one document (points; lower is better)")
    ax.set_ylabel("just-learned accuracy on the document's questions (%)")
    ax.set_title("what the student learned vs what it lost")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    ax.grid(alpha=0.3)
    ax = axes[1]
    for name, rs in sorted(by.items()):
        ax.scatter([x["drift"] for x in rs], [100 * x["drop"] for x in rs], s=14, label=name)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("drift: KL(base || student) on neutral prompts (nats/token)")
    ax.set_ylabel("canary drop (points)")
    ax.set_title("drift vs canary drop (one point per document x regime)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--passages", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--passages-n", type=int, default=8)
    ap.add_argument("--skip", type=int, default=200, help="draw after this many passages of the seeded shuffle")
    ap.add_argument("--regimes", default=",".join(REGIMES))
    ap.add_argument("--shard", default="0/1", help="I/N: this process takes passages i with i %% N == I")
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--eval", default=None, help="a seal eval folder: its conditions join the plot (routed canary)")
    args = ap.parse_args(argv)

    from core.config import apply_sets
    from core.config import load_config
    from core.io import append_jsonl, read_jsonl
    from core.documents import load_passages

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    cfg = apply_sets(load_config(args.config), args.set)
    names = ["base"] + [r for r in args.regimes.split(",") if r]
    unknown = [r for r in names if r != "base" and r not in REGIMES]
    if unknown:
        raise SystemExit(f"unknown regime {unknown[0]!r}; choose from {sorted(REGIMES)}")
    if not args.summary_only:
        passages = held_out(load_passages(args.passages), args.passages_n, cfg.seed, args.skip)
        si, sn = (int(x) for x in args.shard.split("/"))
        done = {(r["doc"], r["regime"]) for r in read_jsonl(results)} if results.is_file() else set()
        bench = None
        for i, p in enumerate(passages):
            if i % sn != si:
                continue
            for name in names:
                first = f"{name}@{REGIMES[name][1]['scales'][0]:g}" if "scales" in REGIMES.get(name, ("", {}))[1] else name
                if (p.doc_id, first) in done:
                    continue
                bench = bench or Bench(cfg, out)
                t0 = time.perf_counter()
                out_rows = bench.run(i, p, name, seed=cfg.seed + i)
                if "learned" in out_rows:
                    out_rows = {name: out_rows}
                for rname, row in out_rows.items():
                    row = {"doc": p.doc_id, "title": p.title, "index": i, "regime": rname,
                           "questions": len(p.questions), "seconds": round(time.perf_counter() - t0, 1)} | row
                    append_jsonl(results, row)
                    print(f"[{i}] {rname:20s} learned {row['learned']:.2f} canary {row['canary']:.3f} "
                          f"drift {row['drift']:.4f} ({row['seconds']:.0f}s)", flush=True)
    rows = read_jsonl(results) if results.is_file() else []
    s = summarize(rows, out, Path(args.eval) if args.eval else None)
    print("\n| regime | docs | just-learned | recite | canary | canary drop | drift (nats/tok) | steps | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in sorted(s["regimes"].items(), key=lambda kv: kv[1]["canary_drop"]):
        print(f"| {name} | {r['n']} | {r['learned']:.3f} | {r['recite']:.3f} | {r['canary']:.3f} | "
              f"{100 * r['canary_drop']:+.1f} | {r['drift']:.4f} | {r['steps']:.0f} | {r['train_s']:.0f} |")
    if s["corr"]:
        print(f"drift vs canary drop over {s['corr']['n']} adaptations: Pearson {s['corr']['pearson']:.2f}, "
              f"Spearman {s['corr']['spearman']:.2f}")
    for name, r in s["regimes"].items():
        print(f"RESULT regime={name} learned={r['learned']:.4f} canary_drop={r['canary_drop']:.4f} drift={r['drift']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
