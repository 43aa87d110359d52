"""Summaries of an eval run directory: means with passage-bootstrap intervals and paired differences."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from core.io import atomic_write_json, read_jsonl
from core.stats import bootstrap_mean, paired_difference

METRICS = ("contains", "f1", "em", "recite", "oracle_contains")
PAIRS = [("learn", "passage"), ("learn", "passage-repeat"), ("learn", "none"), ("learn", "self-edit"),
         ("self-edit", "passage"), ("self-edit", "passage-repeat"), ("self-edit", "self-edit-unguarded"),
         ("self-edit-unguarded", "passage"), ("passage", "none"), ("passage-repeat", "passage")]


def _by_condition(records: list[dict], metric: str) -> dict[str, dict[str, list[float]]]:
    """condition -> doc_id -> per-question values (ordered by question index, last write wins)."""
    cells: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        v = r.get(metric)
        if v is None and metric == "oracle_contains":
            v = r.get("contains")  # runs from before the served/oracle split graded one way
        if metric == "judge":
            if not r.get("judged") or v is None:
                continue
            v = float(v)
        cells[r["condition"]][r["doc_id"]][r["q"]] = float(v)
    return {c: {d: [qs[k] for k in sorted(qs)] for d, qs in docs.items()} for c, docs in cells.items()}


def _regrade_recitation(records: list[dict]) -> None:
    """Recompute the recitation control from the stored answers, so a refined control applies to old runs."""
    from evaluation.graders import recites_other

    golds: dict[tuple, dict[int, str]] = defaultdict(dict)
    for r in records:
        golds[(r["doc_id"], r["condition"], r.get("set", "squad"))][r["q"]] = r["gold"]
    for r in records:
        others = [g for q, g in golds[(r["doc_id"], r["condition"], r.get("set", "squad"))].items() if q != r["q"]]
        r["recite"] = recites_other(r["answer"], r["gold"], others, r.get("question", ""))


def summarize(run_dir: Path, seed: int = 0, only: list[str] | None = None) -> dict:
    """The summary of SQuAD's own questions, with the other question sets the run asked (hand-written rewordings)
    under "sets", each summarised the same way. `only`: these conditions (a condition measured on a few passages
    and dropped would otherwise shrink the passages every condition shares)."""
    records = read_jsonl(run_dir / "records.jsonl")
    _regrade_recitation(records)
    units = read_jsonl(run_dir / "units.jsonl")
    if only:
        records = [r for r in records if r["condition"] in only]
        units = [u for u in units if u["condition"] in only]
    sets = [n for n in dict.fromkeys(r.get("set", "squad") for r in records) if n != "squad"]
    out = _summarize_set([r for r in records if r.get("set", "squad") == "squad"], units, seed)
    out["sets"] = {n: _summarize_set([r for r in records if r.get("set") == n], units, seed) for n in sets}
    return out


def by_set(summary: dict) -> dict[str, dict]:
    return {"squad": summary, **summary.get("sets", {})}


def _summarize_set(records: list[dict], units: list[dict], seed: int) -> dict:
    conds = list(dict.fromkeys(r["condition"] for r in records))
    # Compare conditions only on passages every condition finished, so a partial run is still paired.
    docs_per_cond = defaultdict(set)
    for u in units:
        docs_per_cond[u["condition"]].add(u["doc_id"])
    common = set.intersection(*docs_per_cond.values()) if docs_per_cond else set()
    order = [d for d in dict.fromkeys(r["doc_id"] for r in records) if d in common]
    out: dict = {"passages": len(order), "conditions": {}, "paired": {}}
    by_metric = {m: _by_condition(records, m) for m in (*METRICS, "judge")}
    for c in conds:
        row = {}
        for m in METRICS:
            row[m] = bootstrap_mean([by_metric[m].get(c, {}).get(d, []) for d in order], seed=seed)
        judged = [by_metric["judge"].get(c, {}).get(d, []) for d in order]
        n_judge_rows = sum(1 for r in records if r["condition"] == c and r["doc_id"] in common and r.get("judged"))
        if n_judge_rows:
            row["judge"] = bootstrap_mean(judged, seed=seed)
            row["ungraded"] = n_judge_rows - sum(len(j) for j in judged)
        cu = [u for u in units if u["condition"] == c and u["doc_id"] in common]
        steps = [u["train"]["steps"] for u in cu if u.get("train")]
        secs = [u["train"]["seconds"] for u in cu if u.get("train")]
        row["mean_steps"] = sum(steps) / len(steps) if steps else 0
        row["mean_train_s"] = sum(secs) / len(secs) if secs else 0
        row["mean_unit_s"] = sum(u["seconds"]["total"] for u in cu) / max(1, len(cu))
        drops = [u["canary_drop"] for u in cu if u.get("canary_drop") is not None]
        if drops:
            row["canary_drop"] = sum(drops) / len(drops)
            row["drift"] = sum(u["drift"] for u in cu if u.get("drift") is not None) / len(drops)
        unrouted = [u["canary_drop_unrouted"] for u in cu if u.get("canary_drop_unrouted") is not None]
        if unrouted:  # routing on: the adapter's cost had it answered everything
            row["canary_drop_unrouted"] = sum(unrouted) / len(unrouted)
            row["n_unrouted"] = len(unrouted)  # --no-unrouted-canary skips it: say over how many passages
        if any("units" in u for u in cu):
            row["mean_units_kept"] = sum(u.get("units", 0) for u in cu) / max(1, len(cu))
            row["mean_units_dropped"] = sum(u.get("dropped", 0) for u in cu) / max(1, len(cu))
        out["conditions"][c] = row
    teacher_pairs = [(c, b) for c in conds if c.startswith("teacher:") for b in ("self-edit", "passage", "passage-repeat")]
    recipe_pairs = [(c, b) for c in conds if c.startswith("recipe:")
                    for b in ("passage-repeat", "learn", "passage", "none")]
    out["questions"] = sum(len(by_metric["contains"].get(conds[0], {}).get(d, [])) for d in order) if conds else 0
    for a, b in [*PAIRS, *teacher_pairs, *recipe_pairs]:
        if a in conds and b in conds:
            out["paired"][f"{a} - {b}"] = {
                m: paired_difference([by_metric[m][a].get(d, []) for d in order],
                                     [by_metric[m][b].get(d, []) for d in order], seed=seed)
                for m in ("contains", "oracle_contains", "f1", "recite")
            }
    return out


def _pct(x: dict) -> str:
    return f"{100 * x['mean']:.1f} [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}]"


def markdown(summary: dict) -> str:
    """One table per question set."""
    return "\n".join(_markdown_set(name, s) for name, s in by_set(summary).items())


def result_lines(summary: dict) -> list[str]:
    """One machine-readable line per condition, question set and grading (served routing, or the oracle)."""
    out = []
    for name, s in by_set(summary).items():
        for c, r in s["conditions"].items():
            if not s["passages"]:
                continue
            routed = [("true", r["contains"])]
            if c not in ("none", "open-book"):
                routed.append(("false", r["oracle_contains"]))
            for flag, x in routed:
                out.append(f"RESULT condition={c} set={name} passages={s['passages']} questions={s['questions']} "
                           f"contains={100 * x['mean']:.1f} routed={flag}")
    return out


def _markdown_set(name: str, summary: dict) -> str:
    lines = [f"Passages: {summary['passages']}, questions: {name} ({summary.get('questions', '?')})  "
             "(mean, 95% passage-bootstrap interval, in %; contains as served = routed among every passage of "
             "the run, oracle = the passage's own adapter answers)", "",
             "| condition | contains (served) | contains (oracle) | F1 | EM | recites other gold | steps | train s | "
             "s / doc | units kept/dropped | canary drop (points) | drift |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, r in summary["conditions"].items():
        kd = (f"{r['mean_units_kept']:.1f}/{r['mean_units_dropped']:.1f}" if "mean_units_kept" in r else "")
        lines.append(f"| {c} | {_pct(r['contains'])} | {_pct(r['oracle_contains'])} | {_pct(r['f1'])} | "
                     f"{_pct(r['em'])} | {_pct(r['recite'])} | "
                     f"{r['mean_steps']:.0f} | {r['mean_train_s']:.1f} | {r['mean_unit_s']:.1f} | {kd} | "
                     + (f"{100 * r['canary_drop']:+.1f}" + (f" (unrouted {100 * r['canary_drop_unrouted']:+.1f}"
                                                                f"{'' if r.get('n_unrouted') == summary['passages'] else ', over %d passages' % r['n_unrouted']})"
                                                              if "canary_drop_unrouted" in r else "")
                        + f" | {r['drift']:.4f} |" if "canary_drop" in r else " | |"))
        if "judge" in r:
            lines[-1] += f" judge {_pct(r['judge'])}, ungraded {r['ungraded']}"
    if summary["paired"]:
        lines += ["", "| paired difference | contains (served) | contains (oracle) | F1 | recites |",
                  "|---|---|---|---|---|"]
        for k, d in summary["paired"].items():
            cell = lambda x: f"{100 * x['diff']:+.1f} [{100 * x['lo']:+.1f}, {100 * x['hi']:+.1f}]"  # noqa: E731
            lines.append(f"| {k} | {cell(d['contains'])} | {cell(d['oracle_contains'])} | {cell(d['f1'])} | "
                         f"{cell(d['recite'])} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, seed: int = 0, only: list[str] | None = None) -> dict:
    s = summarize(run_dir, seed, only)
    atomic_write_json(run_dir / "summary.json", s)  # shards of one run may write it at the same time
    (run_dir / "table.md").write_text(markdown(s))
    return s
