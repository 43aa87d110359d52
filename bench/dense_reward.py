"""Does a dense reward predict what the student really learns? Before the teacher's RL relies on it.

For each passage (SQuAD dev, with at least 4 questions), its questions are split in two halves: A (what a
reward would see) and B (held out). The teacher writes K self-edits (the product's teacher and guard); each,
and the raw passage as one more candidate, is trained into a fresh adapter with the product's inner loop. Per
candidate, on both halves:
  containment  closed-book answers that contain the reference (the sparse 0/1 reward of the RL so far)
  likelihood   mean log-probability per answer token of the reference answer (teacher/rewards.py: dense)
  f1           mean token F1 of the same closed-book answers against the references (graded, not 0/1: dense
               at no extra cost, since containment already generates the answers)
  cont+f1      containment, ties broken by F1 (containment gain + F1 gain / 100)
each as a gain over the untouched model. Reported: how often the containment gain on A is exactly 0, the rank
correlation (Spearman) of each reward on A with the containment gain on B, across all candidates and within
contexts, and the held-out gain of the candidate each reward would pick as the best of a context.

    python bench/dense_reward.py --out results/dense-reward [--passages N] [--samples K] [--set model.dtype=bfloat16]
Rows go to OUT/rows.jsonl as they finish (a rerun skips them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.stats import spearman  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/squad/dev.json"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--passages", type=int, default=10)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--offset", type=int, default=230, help="first passage (away from the eval/continual draws)")
    ap.add_argument("--set", action="append", default=[], help="config override section.key=value")
    a = ap.parse_args(argv)

    from evaluation.closed_book import answer, answer_likelihood
    from core.config import load_config
    from evaluation.graders import contains, f1
    from student.runtime import open_runtime
    from core.documents import load_passages
    from teacher.self_edit import build_self_edit
    from teacher.writer import TeacherWriter

    cfg = load_config(a.config)
    over: dict = {}
    for s in a.set:
        k, v = s.split("=", 1)
        sec, key = k.split(".", 1)
        over.setdefault(sec, {})[key] = v
    cfg = cfg.with_overrides(**{sec: {**getattr(cfg, sec).model_dump(), **kv} for sec, kv in over.items()})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    done = {(r["doc_id"], r["k"]) for r in rows}
    rt = open_runtime(cfg)
    st = rt.student
    writer = TeacherWriter(None, st.tokenizer, cfg.teacher.model_copy(update={"samples": a.samples}))
    pool = [p for p in load_passages(a.data) if len(p.questions) >= 4][a.offset:a.offset + a.passages]
    if not pool:
        raise SystemExit(f"no passages with 4+ questions at offset {a.offset} in {a.data}")
    ev = cfg.eval

    def measure(adapter, qs) -> tuple[float, float, float, list[str]]:
        got = answer(st, adapter, [q.question for q in qs], ev.max_new_tokens, ev.batch_size)
        cont = statistics.mean(contains(r, q.answer) for r, q in zip(got, qs))
        return (cont, statistics.mean(answer_likelihood(st, adapter, qs)),
                statistics.mean(f1(r, q.answer) for r, q in zip(got, qs)), got)

    for i, p in enumerate(pool):
        if all((p.doc_id, k) in done for k in range(-1, a.samples)):
            continue
        half_a, half_b = p.questions[0::2], p.questions[1::2]
        base = {h: measure(None, qs) for h, qs in (("a", half_a), ("b", half_b))}
        with st.use(None) as m:
            raws = writer.sample_raw([p], seed=cfg.seed + i, model=m)[0]
        cands = [(-1, [f"{p.title}\n{p.context}"], 0)]
        for k, raw in enumerate(raws):
            se = build_self_edit(p, [raw], cfg.teacher.format, cfg.teacher.grounding)
            cands.append((k, se.sequences(p, cfg.train.passage_in_training), len(se.units)))
        for k, texts, units in cands:
            if (p.doc_id, k) in done or not texts:
                continue
            name = f"dense{i}k{k + 1}"
            st.train_adapter(texts, name, seed=cfg.seed + 100 * i + k)
            try:
                got = {h: measure(name, qs) for h, qs in (("a", half_a), ("b", half_b))}
            finally:
                st.drop(name)
            row = {"doc_id": p.doc_id, "title": p.title, "k": k, "units": units,
                   **{f"cont_gain_{h}": got[h][0] - base[h][0] for h in "ab"},
                   **{f"dense_gain_{h}": got[h][1] - base[h][1] for h in "ab"},
                   **{f"f1_gain_{h}": got[h][2] - base[h][2] for h in "ab"},
                   "base": {h: list(v[:3]) for h, v in base.items()},
                   "after": {h: list(v[:3]) for h, v in got.items()},
                   "answers": {h: got[h][3] for h in "ab"}}
            rows.append(row)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{i}] {p.title[:28]:28s} k={k:2d} cont A {row['cont_gain_a']:+.2f} B {row['cont_gain_b']:+.2f}  "
                  f"dense A {row['dense_gain_a']:+.3f} B {row['dense_gain_b']:+.3f}  "
                  f"F1 A {row['f1_gain_a']:+.3f} B {row['f1_gain_b']:+.3f}", flush=True)
    summarize(rows, out)
    return 0


REWARDS = {"containment_a": lambda r: r["cont_gain_a"], "likelihood_a": lambda r: r["dense_gain_a"],
           "f1_a": lambda r: r["f1_gain_a"], "cont+f1_a": lambda r: r["cont_gain_a"] + r["f1_gain_a"] / 100}


def summarize(rows: list[dict], out: Path) -> dict:
    if not rows:
        print("no candidates measured")
        return {}
    has_f1 = all("f1_gain_a" in r for r in rows)  # rows from before F1 was recorded have the first two only
    rewards = {k: f for k, f in REWARDS.items() if has_f1 or k in ("containment_a", "likelihood_a")}
    ca = [r["cont_gain_a"] for r in rows]
    cb = [r["cont_gain_b"] for r in rows]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["doc_id"], []).append(r)

    def within(f) -> float:
        xs = [spearman([f(r) for r in rs], [r["cont_gain_b"] for r in rs]) for rs in by.values() if len(rs) >= 3]
        xs = [x for x in xs if x == x]
        return statistics.mean(xs) if xs else float("nan")

    def picked(f) -> float:
        return statistics.mean(max(rs, key=lambda r: (f(r), -r["k"]))["cont_gain_b"] for rs in by.values())

    s = {"candidates": len(rows), "contexts": len(by),
         "containment_a_zero_share": sum(x == 0 for x in ca) / len(ca) if ca else float("nan"),
         "spearman_all": {k: spearman([f(r) for r in rows], cb) for k, f in rewards.items()},
         "spearman_within_context": {k: within(f) for k, f in rewards.items()},
         "heldout_gain_of_pick": {**{k: picked(f) for k, f in rewards.items()},
                                  "mean_of_all": statistics.mean(cb) if cb else float("nan")}}
    print(f"{len(rows)} candidates in {len(by)} contexts; containment gain on A exactly 0 for "
          f"{100 * s['containment_a_zero_share']:.0f}%")
    print(f"{'reward on half A':<18} {'rho vs B (all)':>15} {'rho vs B (within)':>18} {'held-out gain of pick':>22}")
    for k in rewards:
        print(f"{k:<18} {s['spearman_all'][k]:>15.3f} {s['spearman_within_context'][k]:>18.3f} "
              f"{s['heldout_gain_of_pick'][k]:>22.3f}")
    print(f"(mean held-out gain of all candidates {s['heldout_gain_of_pick']['mean_of_all']:.3f})")
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    return s


if __name__ == "__main__":
    raise SystemExit(main())
