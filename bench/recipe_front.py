"""The learning recipes on the front of learned, kept and seconds, from a `seal eval` run (issue 26).

Reads RUN/summary.json (rewrites it from the records first, so a partial run works), and writes
RUN/front.json and RUN/front.png: per condition, containment as served on SQuAD's questions and on the
hand-written rewordings, with 95% intervals, against seconds per document; the open-book ceiling as a line.
Prints a table with each condition's share of the open-book score and its paired difference against
passage-repeat, and one RESULT line per condition.

    python bench/recipe_front.py results/eval-recipes-screen
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def front(summary: dict) -> list[dict]:
    from evaluation.report import by_set

    sets = by_set(summary)
    rows = []
    for c, r in summary["conditions"].items():
        row = {"condition": c, "seconds_per_doc": round(r["mean_unit_s"], 1), "steps": round(r["mean_steps"]),
               "canary_drop": r.get("canary_drop"), "drift": r.get("drift")}
        for name, s in sets.items():
            x = s["conditions"].get(c)
            if x is None:
                continue
            ob = s["conditions"].get("open-book", {}).get("contains", {}).get("mean")
            row[name] = {"contains": x["contains"], "oracle": x["oracle_contains"],
                         "of_open_book": x["contains"]["mean"] / ob if ob else None,
                         "vs_repeat": s["paired"].get(f"{c} - passage-repeat", {}).get("contains")}
        rows.append(row)
    return rows


def plot(rows: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, name in zip(axes, ("squad", "reworded")):
        for r in rows:
            x = r.get(name)
            if x is None:
                continue
            if r["condition"] == "open-book":
                ax.axhline(100 * x["contains"]["mean"], ls="--", c="grey", lw=1)
                ax.text(1, 100 * x["contains"]["mean"] + 0.8, "open book (ceiling)", color="grey", fontsize=8)
                continue
            m, lo, hi = (100 * x["contains"][k] for k in ("mean", "lo", "hi"))
            ax.errorbar(r["seconds_per_doc"], m, yerr=[[m - lo], [hi - m]], fmt="o", capsize=3)
            ax.annotate(r["condition"].replace("recipe:", ""), (r["seconds_per_doc"], m), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        tops = [100 * r[name]["contains"]["hi"] for r in rows if r.get(name)]
        ax.set_ylim(0, max([5.0, *tops]) + 5)
        ax.set_title(f"{name} questions (as served)")
        ax.set_xlabel("seconds per document (2 cores, one process per core)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("closed-book containment, %")
    fig.tight_layout()
    path = out / "front.png"
    fig.savefig(path, dpi=120)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `seal eval` run directory")
    ap.add_argument("--conditions", help="comma list: only these conditions (as `seal report --conditions`)")
    args = ap.parse_args(argv)
    from evaluation.report import write_report

    if not (args.run / "records.jsonl").is_file():
        print(f"{args.run} has no records.jsonl (not a seal eval run)", file=sys.stderr)
        return 2
    summary = write_report(args.run, only=args.conditions.split(",") if args.conditions else None)
    rows = front(summary)
    (args.run / "front.json").write_text(json.dumps(rows, indent=2))
    pct = lambda x: "-" if x is None else f"{100 * x['mean']:.1f} [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}]"  # noqa
    diff = lambda x: "-" if x is None else f"{100 * x['diff']:+.1f} [{100 * x['lo']:+.1f}, {100 * x['hi']:+.1f}]"  # noqa
    print(f"Passages: {summary['passages']} (squad), "
          f"{summary.get('sets', {}).get('reworded', {}).get('passages', 0)} (reworded)\n")
    print("| condition | squad: served | of open book | vs passage-repeat | reworded: served | of open book | "
          "vs passage-repeat | s / doc | steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for name in ("squad", "reworded"):
            x = r.get(name) or {}
            ob = x.get("of_open_book")
            cells += [pct(x.get("contains")), "-" if ob is None else f"{100 * ob:.0f}%", diff(x.get("vs_repeat"))]
        print(f"| {r['condition']} | " + " | ".join(cells) + f" | {r['seconds_per_doc']} | {r['steps']} |")
    path = plot(rows, args.run)
    if path:
        print(f"\nplot: {path}")
    for r in rows:
        sq, rw = r.get("squad") or {}, r.get("reworded") or {}
        print(f"RESULT condition={r['condition']} squad={100 * sq['contains']['mean']:.1f} "
              f"reworded={100 * rw['contains']['mean'] if rw else float('nan'):.1f} "
              f"s_per_doc={r['seconds_per_doc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
