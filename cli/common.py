"""What every `seal` command shares: the typer app, consoles, config loading, the bad-input guard, the model load."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.config import ConfigError, SealConfig, apply_sets, load_config
from core.documents import DocumentFormatError
from core.extras import MissingExtra

app = typer.Typer(no_args_is_help=True, help="seal-agent: teach a student model new documents.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"seal-agent {version('seal-agent')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("seal-agent (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print the version and exit.")) -> None:
    """seal-agent: teach a student model new documents."""
# Piped output (CI logs, files, tests) gets wide tables instead of 80-column wrapping.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (default: configs/default.yaml if present).")
SetOpt = typer.Option(None, "--set", help="Override a config value, e.g. --set runtime.threads=1 (repeatable).")


def read_config(path: Optional[Path], sets: Optional[list[str]] = None) -> SealConfig:
    if path is None:
        default = Path("configs/default.yaml")
        cfg = load_config(default) if default.is_file() else SealConfig()
    else:
        cfg = load_config(path)
    cfg = apply_sets(cfg, sets or [])
    if cfg.continual.canary.enabled:  # a user's canary or prompts file is checked before any model loads
        from evaluation.canary import CanaryError, load_canary, load_neutral_prompts, retain_prompts

        try:
            load_canary(cfg.continual.canary.file)
            load_neutral_prompts(cfg.continual.canary.prompts_file)
            retain_prompts(cfg.continual.canary, cfg.train.retain)
        except CanaryError as e:
            raise ConfigError(f"continual.canary: {e}") from e
    return cfg


def fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}")  # a message may hold brackets (paths, extras, lists)
    raise typer.Exit(2)


SHARD_HELP = "I/N: this process takes every N-th selected passage from the I-th, so N processes (one per core) " \
             "can share one output directory."


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        si, sn = (int(x) for x in shard.split("/"))
        if not 0 <= si < sn:
            raise ValueError
    except ValueError:
        fail(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return si, sn


def guarded(fn):
    """Bad input -> a one-line message and exit code 2, before any model is loaded or file written."""
    from functools import wraps

    from agent.experiment import ConditionError
    from memory.schema import SchemaError
    from student.models import ModelSourceError
    from student.prepared import PreparedError

    @wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except (ConfigError, DocumentFormatError, ConditionError, ModelSourceError, MissingExtra, SchemaError,
                PreparedError) as e:
            fail(str(e))

    return wrapper


def load_runtime(cfg: SealConfig):
    from student.runtime import open_runtime

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with err.status(f"loading model {cfg.model.source} ..."):
        t = time.perf_counter()
        rt = open_runtime(cfg)
    err.print(f"model {rt.model_name} ready in {time.perf_counter() - t:.1f}s")
    return rt


def print_forgetting(rep: dict) -> None:
    """The ledger and its metrics as a table (from the report's JSON, so the API's output prints the same)."""
    t = Table(title="probe accuracy R[version][document] (columns in learning order)")
    t.add_column("version")
    for i, _ in enumerate(rep["docs"]):
        t.add_column(f"d{i}", justify="right")
    t.add_column("avg", justify="right")
    t.add_column("BWT", justify="right")
    t.add_column("canary", justify="right")
    t.add_column("drift", justify="right")
    fmt = lambda x: "" if x is None or x != x else f"{x:.2f}"  # noqa: E731
    pct = lambda x: "" if x is None or x != x else f"{100 * x:.1f}%"  # noqa: E731
    kl = lambda x: "" if x is None or x != x else f"{x:.4f}"  # noqa: E731
    canary, drift = rep.get("canary") or [None] * len(rep["versions"]), rep.get("drift") or [None] * len(rep["versions"])
    if rep.get("base") or rep.get("canary_base") is not None:
        t.add_row("base", *[fmt((rep.get("base") or {}).get(d)) for d in rep["docs"]], "", "",
                  pct(rep.get("canary_base")), kl(0.0))
    for v, row, a, b, c, k in zip(rep["versions"], rep["matrix"], rep["avg_accuracy"], rep["bwt"], canary, drift):
        t.add_row(f"v{v}", *[fmt(x) for x in row], fmt(a), fmt(b), pct(c), kl(k))
    console.print(t)
    if rep.get("final_canary") is None and rep.get("canary_base") is not None:
        console.print(f"general ability: canary {pct(rep['canary_base'])} for the untouched model; no promoted "
                      "version has changed it")
    if rep.get("final_canary") is not None:
        console.print(f"general ability: canary {pct(rep['final_canary'])} (untouched model "
                      f"{pct(rep.get('canary_base'))}), drift {kl(rep.get('final_drift'))} nats/token"
                      + (" (with every adapter on; routed, a query meets at most one)" if rep.get("routing") else ""))
    console.print(f"final average accuracy {fmt(rep['final_avg'])}, BWT {fmt(rep['final_bwt'])}, "
                  f"untouched model {fmt(rep.get('base_avg'))}; retention by age "
                  + ", ".join(f"{k}:{v:.2f}" for k, v in rep["retention_by_age"].items()))


