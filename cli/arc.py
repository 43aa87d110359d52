"""`seal arc eval | rl | report | synth`: ARC with tool-specification self-edits."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import ConfigOpt, SetOpt, app, console, err, fail, guarded, load_runtime, read_config

arc_app = typer.Typer(no_args_is_help=True, help="ARC few-shot tasks: tool-spec self-edits, test-time training.")
app.add_typer(arc_app, name="arc")
TasksOpt = typer.Option(..., "--tasks", help="Kaggle-format challenges JSON.")
SolOpt = typer.Option(None, "--solutions", help="Solutions JSON (default: the *solutions* file beside --tasks).")


def _tasks(tasks: Path, solutions: Optional[Path], limit: Optional[int]):
    from tasks.arc.grids import ArcFormatError, load_tasks, solutions_beside

    if not tasks.is_file():
        fail(f"task file not found: {tasks}")
    sol = solutions or solutions_beside(tasks)
    if sol is None:
        fail(f"no solutions for {tasks}: pass --solutions (success needs the answers)")
    try:
        ts = load_tasks(tasks, sol)
    except ArcFormatError as e:
        fail(str(e))
    missing = [t.id for t in ts if t.test_outputs is None]
    if missing:
        fail(f"{len(missing)} tasks have no solution (e.g. {missing[0]})")
    return ts[:limit] if limit else ts


def _shard(text: str) -> slice:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        fail(f"--shard must be I/N with integers, e.g. 0/2 (got {text!r})")
    if not 0 <= i < n:
        fail(f"--shard {text}: need 0 <= I < N")
    return slice(i, None, n)


def _table(summary: dict, title: str) -> Table:
    t = Table(title=title)
    for c in ("condition", "self-edits", "solved", "success rate", "tasks solved", "invalid samples",
              "no valid spec", "over budget", "s/self-edit", "s/task"):
        t.add_column(c, justify="right")
    for c, s in summary.items():
        t.add_row(c, str(s["attempts"]), str(s["solved_attempts"]), f"{s['success_rate']:.1%}",
                  f"{s['tasks_solved']}/{s['tasks']}", str(s["invalid_samples"]), str(s["no_valid_spec"]),
                  str(s["over_budget"]), f"{s['seconds_per_self_edit']:.0f}", f"{s['seconds_per_task']:.0f}")
    return t


@arc_app.command("eval")
@guarded
def arc_eval(
    tasks: Path = TasksOpt,
    solutions: Optional[Path] = SolOpt,
    conditions: str = typer.Option("icl,ttt,oracle", help="icl, ttt, oracle, teacher:RUN@V (comma-separated)."),
    samples: Optional[int] = typer.Option(None, min=1, help="K self-edits per task (default: arc.samples)."),
    limit: Optional[int] = typer.Option(None, min=1),
    shard: Optional[str] = typer.Option(None, help="I/N: only tasks I, I+N, I+2N, ... (0-based), so N processes "
                                        "(one per core) can share one --out."),
    out: Optional[Path] = typer.Option(None, help="Run directory (an existing one resumes)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Success rate per condition: the fraction of sampled self-edits whose TTT solves the task."""
    from core.runs import new_run_dir
    from tasks.arc.experiment import ArcError, evaluate, parse_arc_conditions

    cfg = read_config(config, set_)
    if samples:
        cfg = cfg.with_overrides(arc={"samples": samples})
    ts = _tasks(tasks, solutions, limit)
    if shard is not None:
        ts = ts[_shard(shard)]
    try:
        conds = parse_arc_conditions(conditions)
    except ArcError as e:
        fail(str(e))
    rt = load_runtime(cfg)
    run = new_run_dir(cfg, "arc", out)
    err.print(f"{len(ts)} tasks x {conds}; writing to {run}")
    summary = evaluate(rt, ts, conds, run, log=lambda m: err.print(m))
    console.print(_table(summary, f"ARC ({run})"))


@arc_app.command("rl")
@guarded
def arc_rl(
    tasks: Path = TasksOpt,
    solutions: Optional[Path] = SolOpt,
    rounds: int = typer.Option(1, min=1),
    samples: Optional[int] = typer.Option(None, min=1),
    limit: Optional[int] = typer.Option(None, min=1),
    out: Optional[Path] = typer.Option(None, help="Run directory (an existing one resumes)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """ReST-EM over specs: binary reward (solved), SFT the teacher on the winning specs, new teacher version.
    Then: seal arc eval --conditions ttt,teacher:RUN@1."""
    from core.runs import new_run_dir
    from tasks.arc.experiment import rl

    cfg = read_config(config, set_)
    if samples:
        cfg = cfg.with_overrides(arc={"samples": samples})
    ts = _tasks(tasks, solutions, limit)
    rt = load_runtime(cfg)
    run = new_run_dir(cfg, "arc-rl", out)
    err.print(f"{len(ts)} tasks, {rounds} rounds; writing to {run}")
    for s in rl(rt, ts, run, rounds, log=lambda m: err.print(m)):
        console.print(f"round {s['round']}: teacher-v{s['teacher']} success {s['success_rate']:.1%} "
                      f"({s['solved']}/{s['attempts']}), invalid samples {s['invalid_samples']}, "
                      f"winners {s['winners']} -> {('teacher-v%d' % s['new_teacher']) if s['new_teacher'] else '-'}")
    console.print(f"next: seal arc eval --tasks {tasks} --conditions ttt,teacher:{run}@1")


@arc_app.command("report")
@guarded
def arc_report(run: Path = typer.Argument(..., help="An `seal arc eval` run directory.")):
    """The table of a (possibly partial) run, recomputed from attempts.jsonl."""
    from core.io import read_jsonl
    from tasks.arc.experiment import summarize

    rows = read_jsonl(run / "attempts.jsonl")
    if not rows:
        fail(f"{run} has no ARC attempts")
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    summary = summarize(rows, conds)
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(_table(summary, f"ARC ({run})"))
    console.print("RESULT " + " ".join(f"{c}={s['success_rate']:.3f}" for c, s in summary.items()))


@arc_app.command("synth")
@guarded
def arc_synth(
    rule: str = typer.Option("flip_h", help="flip_h, flip_v, rot90, rot180, transpose."),
    n: int = typer.Option(4, min=1, help="How many tasks."),
    side: int = typer.Option(3, min=1, max=30),
    demos: int = typer.Option(3, min=2),
    out: Path = typer.Option(Path("runs/arc-synthetic")),
    seed: int = typer.Option(0),
):
    """Write tasks solvable by construction (a fixed geometric rule) in the Kaggle format."""
    from tasks.arc.synthetic import write_synthetic

    try:
        a, b = write_synthetic(out, rule, n, demos=demos, side=side, seed=seed)
    except ValueError as e:
        fail(str(e))
    console.print(f"{a}\n{b}")
