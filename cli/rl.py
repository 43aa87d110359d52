"""`seal rl`: teacher RL by ReST-EM (train rounds, held-out evaluation, report)."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import (SHARD_HELP, ConfigOpt, SetOpt, app, console, err, fail, guarded, load_runtime, parse_shard,
                        read_config)
from core.extras import require

rl_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                     help="Teacher RL (ReST-EM): `seal rl --passages F` trains rounds; `report` and `eval` subcommands.")
app.add_typer(rl_app, name="rl")


def _run_config(run: Path, config: Optional[Path], set_: Optional[list[str]]):
    """A run's own config (what it was trained with), unless one is given."""
    from core.config import load_config

    if config is None and (run / "config.yaml").is_file():
        from cli.common import apply_sets

        return apply_sets(load_config(run / "config.yaml"), set_ or [])
    return read_config(config, set_)


@rl_app.callback()
@guarded
def rl(
    ctx: typer.Context,
    passages: Optional[Path] = typer.Option(None, help="Training passages with QA (SQuAD/SEAL JSON)."),
    rounds: Optional[int] = typer.Option(None, min=1, help="Default: rl.rounds."),
    contexts: Optional[int] = typer.Option(None, min=1, help="N contexts per round (default: rl.contexts)."),
    samples: Optional[int] = typer.Option(None, min=1, help="K self-edits per context (default: rl.samples)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; an existing one is resumed."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Train the teacher: per round, sample K self-edits for N contexts, reward each by the student's gain,
    fine-tune the teacher on the winners (a new teacher version)."""
    if ctx.invoked_subcommand is not None:
        return
    from agent.rl_workers import CeleryCandidates
    from core.documents import load_passages
    from teacher.rl.rest_em import RestEM, RLError, new_rl_run

    if passages is None:
        fail("--passages is required to train (or: `seal rl report RUN`, `seal rl eval RUN --passages F`)")
    cfg = _run_config(out, config, set_) if out is not None and (out / "config.yaml").is_file() else \
        read_config(config, set_)
    over = {k: v for k, v in (("rounds", rounds), ("contexts", contexts), ("samples", samples)) if v is not None}
    if over:
        cfg = cfg.with_overrides(rl=over)
    ps = load_passages(passages)
    if cfg.rl.evaluate_on == "celery":  # fail before loading a model, with the broker named
        from cli.service import check_broker

        check_broker(cfg)
    rt = load_runtime(cfg)
    run = new_rl_run(cfg, out)
    (run / "training_passages.json").write_text(json.dumps(str(passages.resolve())))
    err.print(f"writing to {run}")
    try:
        rest = RestEM(rt, ps, run, log=lambda m: err.print(m), progress=sys.stderr.isatty(), remote=CeleryCandidates)
    except RLError as e:
        fail(str(e))

    def show(c: dict) -> None:
        err.print(f"round {c['round']} {c['title'][:28]!r:30s} k={c['k']} gain {c['gain']:+.2f} "
                  f"reward {c['reward']:+.2f} ({len(c['units'])} units, {c['seconds']['total']:.1f}s)")

    for s in rest.run(on_candidate=show):
        console.print(f"round {s['round']}: teacher-v{s['teacher']}, mean reward {s['mean_reward']:+.3f}, "
                      f"win rate {s['win_rate']:.2f}, {s['winners']} winners -> "
                      + (f"teacher-v{s['new_teacher']}" if s.get("new_teacher") else "teacher unchanged"))
    console.print(f"next: seal rl eval {run} --passages FILE   (held-out passages), then seal rl report {run}")


@rl_app.command("eval")
@guarded
def rl_eval(
    run: Path = typer.Argument(..., help="An RL run directory."),
    passages: Path = typer.Option(..., help="Held-out candidates; passages used in training are excluded."),
    limit: Optional[int] = typer.Option(30, min=1, help="How many held-out passages."),
    every: int = typer.Option(1, min=1, help="Take every K-th passage."),
    regime: Optional[str] = typer.Option(None, help="How every condition trains: paper (next-token loss alone) "
                                         "or product (+ retention, routed as served). Default: the run's rl.regime."),
    canary: bool = typer.Option(True, help="Also measure each condition's canary cost (as served) and drift."),
    shard: str = typer.Option("0/1", help=SHARD_HELP),
    sample_only: bool = typer.Option(False, help="Only sample and store every teacher's self-edits for the "
                                     "passages (no training): the evaluation then no longer needs the adapters."),
    unrouted_canary: bool = typer.Option(False, help="With routing, also the canary with the adapter answering "
                                         "every question (151 more answers per condition and passage)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Held-out comparison: passage-only, the base teacher (round 0) and every trained teacher, each a fresh
    adapter per passage, paired on the same passages and seeds. Written to RUN/heldout (resumable)."""
    from agent.experiment import EvalRun, parse_conditions
    from core.documents import load_passages
    from core.io import read_jsonl
    from core.runs import new_run_dir
    from evaluation.report import write_report
    from teacher.versions import TeacherStore

    if not (run / "candidates.jsonl").is_file() and not (run / "contexts.json").is_file():
        fail(f"{run} is not an RL run (no candidates.jsonl or contexts.json)")
    cfg = _run_config(run, config, set_)
    used = {c["doc_id"] for c in read_jsonl(run / "candidates.jsonl")}
    if (run / "contexts.json").is_file():  # every round's planned contexts, trained yet or not
        used |= {d for ids in json.loads((run / "contexts.json").read_text()).values() for d in ids}
    ps = [p for p in load_passages(passages)[::every] if p.questions and p.doc_id not in used][:limit]
    if not ps:
        fail("no held-out passages left after excluding the training contexts")
    si, sn = parse_shard(shard)
    regime = regime or cfg.rl.regime
    if regime not in ("paper", "product"):
        fail(f"--regime must be paper or product, not {regime!r}")
    if regime == "product" and not canary:
        fail("--regime product trains with retention, which needs the canary's references: drop --no-canary")
    if regime == "product" and cfg.train.retain.weight <= 0:
        fail("--regime product trains with retention, but train.retain.weight is 0 in this run's config")
    versions = TeacherStore(run / "teachers").versions()
    # passage-repeat: the passage alone, repeated to the round-0 self-edit's optimizer steps (step-matched)
    spec = ",".join(["passage", "passage-repeat", "self-edit", *(f"teacher:{run}@{v}" for v in versions)])
    rt = load_runtime(cfg)
    general = None
    if canary:
        from evaluation.canary import GeneralMonitor

        general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    out = new_run_dir(cfg, "heldout", run / "heldout")
    err.print(f"held-out: {len(ps)} passages, conditions {spec}, {regime} regime; writing to {out}")
    runner = EvalRun(rt, parse_conditions(spec), out, log=lambda m: err.print(m), progress=sys.stderr.isatty(),
                     general=general, retain_all=regime == "product", unrouted=unrouted_canary, passages=ps)
    if sample_only:
        n = runner.sample_edits(ps)
        console.print(f"sampled {n} self-edits ({len(runner.edits)} stored in {out / 'self_edits.jsonl'})")
        return
    runner.run(ps, on_passage=lambda i: write_report(out, cfg.seed), shard=(si, sn))
    write_report(out, cfg.seed)
    console.print(f"done: seal rl report {run}")


def _round_name(cond: str, run: Path) -> int | None:
    if cond == "self-edit":
        return 0
    if cond.startswith("teacher:") and "@" in cond:
        return int(cond.rsplit("@", 1)[1])
    return None


@rl_app.command("report")
@guarded
def rl_report(run: Path = typer.Argument(..., help="An RL run directory.")):
    """Per-round reward and win rate, the held-out table, a plot of held-out accuracy vs round, and a RESULT
    line comparing the round-0 and the last teacher."""
    from core.io import read_jsonl

    rounds = read_jsonl(run / "rounds.jsonl")
    if not rounds and not (run / "candidates.jsonl").is_file():
        fail(f"{run} is not an RL run")
    t = Table(title=f"ReST-EM rounds ({run})")
    for c in ("round", "teacher", "candidates", "mean reward", "mean gain", "win rate", "winners", "s/candidate",
              "overhead", "new teacher"):
        t.add_column(c, justify="right")
    for r in rounds:
        t.add_row(str(r["round"]), f"v{r['teacher']}", str(r["candidates"]), f"{r['mean_reward']:+.3f}",
                  f"{r['mean_gain']:+.3f}", f"{r['win_rate']:.2f}", str(r["winners"]),
                  f"{r['seconds_per_candidate']:.1f}", f"{r['overhead_share']:.1%}",
                  f"v{r['new_teacher']}" if r.get("new_teacher") else "-")
    console.print(t)
    _per_round(run)
    _general_terms(run)
    summary_file = run / "heldout" / "summary.json"
    if not summary_file.is_file():
        console.print(f"no held-out evaluation yet: seal rl eval {run} --passages FILE")
        return
    from evaluation.report import markdown

    summary = json.loads(summary_file.read_text())
    console.print(markdown(summary))
    pts = sorted((_round_name(c, run), c) for c in summary["conditions"] if _round_name(c, run) is not None)
    _plot(run, summary, pts)
    first, last = pts[0][1], pts[-1][1]
    a = summary["conditions"][first]["contains"]["mean"]
    b = summary["conditions"][last]["contains"]["mean"]
    pair = summary["paired"].get(f"{last} - self-edit", {}).get("contains", {"diff": b - a, "lo": float("nan")})
    console.print(f"plot: {run / 'heldout' / 'accuracy_vs_round.png'}")
    rep = summary["paired"].get(f"{last} - passage-repeat", {}).get("contains")
    vs_repeat = f" vs_repeat={rep['diff']:.4f} vs_repeat_ci_low={rep['lo']:.4f}" if rep else ""
    console.print(f"RESULT round0={a:.4f} last={b:.4f} diff={pair['diff']:.4f} ci_low={pair['lo']:.4f}{vs_repeat}")


def _per_round(run: Path) -> None:
    """What each round's candidates looked like, from candidates.jsonl (so a round still running shows too):
    the reward's spread, the dense reward's agreement with containment, the edits' variety and general cost."""
    from core.config import load_config
    from core.io import read_jsonl
    from core.stats import spearman
    from teacher.diversity import edit_diversity
    from teacher.rewards import passage_control

    rows = read_jsonl(run / "candidates.jsonl")
    if not rows:
        return
    # guard-emptied candidates trained on the passage alone only if the run trained the passage alongside edits
    with_passage = (run / "config.yaml").is_file() and load_config(run / "config.yaml").train.passage_in_training
    t = Table(title="candidates per round (all measured so far)")
    for c in ("round", "n", "gain mean / sd", "gain > 0", "gain = 0", "spearman(dense, containment)",
              "kept units", "distinct-2", "compression", "guard dropped", "canary drop (unrouted)", "drift"):
        t.add_column(c, justify="right")
    for r in sorted({c["round"] for c in rows}):
        cs = [c for c in rows if c["round"] == r]
        gains = [c["gain"] for c in cs]
        dense = [(c["dense_gain"], c["gain"]) for c in cs if c.get("dense_gain") is not None]
        rho = spearman([d for d, _ in dense], [g for _, g in dense]) if len(dense) > 2 else float("nan")
        d = edit_diversity(cs)
        drops = [c["canary_drop"] for c in cs if c.get("canary_drop") is not None]
        drifts = [c["drift"] for c in cs if c.get("drift") is not None]
        sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
        t.add_row(str(r), str(len(cs)), f"{statistics.mean(gains):+.3f} / {sd:.3f}",
                  str(sum(g > 0 for g in gains)), str(sum(g == 0 for g in gains)), f"{rho:+.2f}",
                  f"{d['mean_units']:.2f}", f"{d['distinct_2']:.2f}", f"{d['compression_ratio']:.2f}",
                  f"{d['guard_dropped_share']:.0%}",
                  f"{100 * sum(drops) / len(drops):+.1f} pts" if drops else "-",
                  f"{sum(drifts) / len(drifts):.3f}" if drifts else "-")
    console.print(t)
    for r in sorted({c["round"] for c in rows}):
        cs = [c for c in rows if c["round"] == r]
        gains: dict[str, int] = {}
        for c in sorted(cs, key=lambda c: c["gain"]):
            gains[f"{c['gain']:+.2f}"] = gains.get(f"{c['gain']:+.2f}", 0) + 1
        rw = sorted(c["reward"] for c in cs)
        q = [rw[min(len(rw) - 1, int(f * len(rw)))] for f in (0.0, 0.25, 0.5, 0.75)] + [rw[-1]]
        console.print(f"round {r}: containment gain distribution {gains}; reward min/q1/median/q3/max "
                      + " / ".join(f"{x:+.3f}" for x in q))
        pc = passage_control(cs)
        if with_passage and pc["emptied"] and pc["kept"]:
            console.print(f"round {r}: kept edits (+ passage) gain {pc['kept_gain']:+.3f} over {pc['kept']}; the "
                          f"passage alone (guard-emptied candidates) {pc['emptied_gain']:+.3f} over {pc['emptied']}; "
                          f"paired on {pc['paired_contexts']} contexts with both: {pc['paired_diff']:+.3f}")


def _general_terms(run: Path) -> None:
    """Whom a drift or canary penalty picks instead of the gain alone, on the same measured candidates."""
    from core.config import load_config
    from core.io import read_jsonl
    from teacher.rewards import term_effect

    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    rows = [c for c in read_jsonl(run / "candidates.jsonl") if c["units"]]
    if cfg is None or not rows:
        return
    terms = [("canary_drop", "canary drop, adapter on every question"), ("drift", "drift, nats/token")]
    if cfg.rl.retention_docs:  # forgetting on earlier contexts' probes
        terms.append(("forgetting", "forgetting on earlier contexts' probes"))
    for term, what in terms:
        have = [c for c in rows if c.get(term) is not None]
        if not have:
            continue
        t = Table(title=f"reward = gain - lambda x {what}: winners on the same {len(have)} candidates")
        for c in ("lambda", "winners", "contexts whose winner changes", "winners' gain", f"winners' {term}"):
            t.add_column(c, justify="right")
        run_lam = {"canary_drop": cfg.rl.canary_lambda, "drift": cfg.rl.drift_lambda,
                   "forgetting": cfg.rl.retention_lambda}[term]
        for lam in sorted({0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, run_lam}):
            e = term_effect(have, term, lam, cfg.rl.selection, cfg.rl.threshold)
            t.add_row(f"{lam:g}" + (" (this run)" if lam == run_lam else ""), str(e["winners"]), str(e["contexts_changed"]), f"{e['gain']:+.3f}",
                      f"{e['term_value']:+.4f}")
        console.print(t)


def _plot(run: Path, summary: dict, pts: list[tuple[int, str]]) -> None:
    matplotlib = require("matplotlib", "the RL plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r for r, _ in pts]
    ms = [summary["conditions"][c]["contains"]["mean"] * 100 for _, c in pts]
    lo = [m - summary["conditions"][c]["contains"]["lo"] * 100 for m, (_, c) in zip(ms, pts)]
    hi = [summary["conditions"][c]["contains"]["hi"] * 100 - m for m, (_, c) in zip(ms, pts)]
    ax.errorbar(xs, ms, yerr=[lo, hi], marker="o", capsize=4, label="self-edits of the round's teacher")
    if "passage" in summary["conditions"]:
        p = summary["conditions"]["passage"]["contains"]
        ax.axhline(p["mean"] * 100, color="gray", ls="--", label="passage only")
        ax.axhspan(p["lo"] * 100, p["hi"] * 100, color="gray", alpha=0.15)
    ax.set_xlabel("ReST-EM round (teacher version)")
    ax.set_ylabel("held-out closed-book accuracy (contains, %)")
    ax.set_xticks(xs)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "heldout" / "accuracy_vs_round.png", dpi=120)
    plt.close(fig)
