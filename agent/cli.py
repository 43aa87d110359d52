"""The `seal` command line (typer: typed options, generated help, exit code 2 on usage errors)."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.config import ConfigError, SealConfig, load_config
from memory.documents import DocumentFormatError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="seal-agent: teach a student model new documents.")
# Piped output (CI logs, files, tests) gets wide tables instead of 80-column wrapping.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (default: configs/default.yaml if present).")
SetOpt = typer.Option(None, "--set", help="Override a config value, e.g. --set runtime.threads=1 (repeatable).")


def _config(path: Optional[Path], sets: Optional[list[str]] = None) -> SealConfig:
    if path is None:
        default = Path("configs/default.yaml")
        cfg = load_config(default) if default.is_file() else SealConfig()
    else:
        cfg = load_config(path)
    cfg = apply_sets(cfg, sets or [])
    if cfg.continual.canary.enabled:  # a user's canary or prompts file is checked before any model loads
        from agent.canary import CanaryError, load_canary, load_neutral_prompts, retain_prompts

        try:
            load_canary(cfg.continual.canary.file)
            load_neutral_prompts(cfg.continual.canary.prompts_file)
            retain_prompts(cfg.continual.canary, cfg.train.retain)
        except CanaryError as e:
            raise ConfigError(f"continual.canary: {e}") from e
    return cfg


def apply_sets(cfg: SealConfig, sets: list[str]) -> SealConfig:
    """`--set section.key=value` overrides (value parsed as YAML), validated like the file itself."""
    import yaml
    from pydantic import ValidationError

    data = cfg.model_dump()
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: no config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown key {parts[-1]!r}")
        node[parts[-1]] = yaml.safe_load(value)
    try:
        return SealConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid --set override:\n{e}") from e


def _fail(msg: str) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _guarded(fn):
    """Bad input -> a one-line message and exit code 2, before any model is loaded or file written."""
    from functools import wraps

    from agent.experiment import ConditionError
    from student.models import ModelSourceError

    @wraps(fn)
    def wrapper(*a, **k):
        try:
            return fn(*a, **k)
        except (ConfigError, DocumentFormatError, ConditionError, ModelSourceError) as e:
            _fail(str(e))

    return wrapper


def _runtime(cfg: SealConfig):
    from agent.runtime import open_runtime

    logging.getLogger("transformers").setLevel(logging.ERROR)
    with err.status(f"loading model {cfg.model.source} ..."):
        t = time.perf_counter()
        rt = open_runtime(cfg)
    err.print(f"model {rt.model_name} ready in {time.perf_counter() - t:.1f}s")
    return rt


def _answers_table(title: str, rows: list[tuple[str, str, str, str]]) -> Table:
    t = Table(title=title, show_lines=False)
    for col in ("question", "gold", "before", "after"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


@app.command()
@_guarded
def learn(
    passage_file: Path = typer.Argument(..., help="JSON: one passage {title, context, questions?} or a list."),
    index: int = typer.Option(0, help="Which passage of a list to learn."),
    config: Optional[Path] = ConfigOpt,
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/learn-<time>)."),
    self_edit_file: Optional[Path] = typer.Option(None, help="Use completions from a SEAL-format JSON file."),
    guard: bool = typer.Option(True, help="Drop self-edit lines not grounded in the passage."),
    set_: Optional[list[str]] = SetOpt,
):
    """Write a self-edit for a passage, train a LoRA adapter on it, and compare closed-book answers."""
    from agent.closed_book import answer
    from agent.graders import contains
    from agent.runtime import new_run_dir
    from memory.documents import load_passages
    from teacher.external import ExternalEdits

    cfg = _config(config, set_)
    passages = load_passages(passage_file)
    if not 0 <= index < len(passages):
        _fail(f"--index {index} out of range: {passage_file} has {len(passages)} passage(s)")
    p = passages[index]
    external = ExternalEdits(self_edit_file) if self_edit_file else None
    grounding = cfg.teacher.grounding.model_copy(update={"enabled": guard and cfg.teacher.grounding.enabled})
    rt = _runtime(cfg)
    run = new_run_dir(cfg, "learn", out)
    qs = [qa.question for qa in p.questions]
    before = answer(rt.student, None, qs, cfg.eval.max_new_tokens, cfg.eval.batch_size) if qs else []

    console.rule(f"[bold]{p.title}")
    t0 = time.perf_counter()
    if external:
        se = external.self_edit(p, cfg.teacher.format, grounding)
    else:
        from teacher.self_edit import build_self_edit
        from teacher.writer import TeacherWriter

        with err.status("teacher is writing a self-edit ..."):
            raw = TeacherWriter(rt.teacher.model, rt.teacher.tokenizer, cfg.teacher).sample_raw([p], cfg.seed)[0]
        se = build_self_edit(p, raw, cfg.teacher.format, grounding)
    t_edit = time.perf_counter() - t0
    console.print(f"[bold]self-edit[/] ({se.format}, {se.source}, {t_edit:.1f}s): "
                  f"{se.parsed} units parsed, {len(se.units)} kept, {len(se.dropped)} dropped by the guard")
    for u in se.units:
        console.print(f"  [green]+[/] {u}")
    for v in se.dropped:
        console.print(f"  [red]-[/] {v.unit}  [dim]({v.reason})[/]")
    texts = se.sequences(p, cfg.train.passage_in_training)
    stats = rt.student.train_adapter(texts, "learned", seed=cfg.seed, progress=True, desc="training adapter")
    path = rt.student.save("learned", run / "adapter")
    after = answer(rt.student, "learned", qs, cfg.eval.max_new_tokens, cfg.eval.batch_size) if qs else []
    summary = {"passage": p.title, "doc_id": p.doc_id, "self_edit": se.to_json(), "train": stats.summary(),
               "adapter": str(path), "seconds_self_edit": round(t_edit, 2)}
    if qs:
        golds = [qa.answer for qa in p.questions]
        summary["before"] = [{"q": q, "gold": g, "answer": a} for q, g, a in zip(qs, golds, before)]
        summary["after"] = [{"q": q, "gold": g, "answer": a} for q, g, a in zip(qs, golds, after)]
        acc_b = sum(contains(a, g) for a, g in zip(before, golds)) / len(qs)
        acc_a = sum(contains(a, g) for a, g in zip(after, golds)) / len(qs)
        summary["contains_before"], summary["contains_after"] = acc_b, acc_a
        console.print(_answers_table("closed-book answers (passage not in context)",
                                     list(zip(qs, golds, before, after))))
        console.print(f"gold contained in answer: before {acc_b:.0%} -> after {acc_a:.0%}")
    (run / "learn.json").write_text(json.dumps(summary, indent=2))
    s = stats.summary()
    console.print(f"trained {s['steps']} steps on {s['sequences']} sequences in {s['seconds']:.1f}s "
                  f"(loss {s['loss_first']:.2f} -> {s['loss_last']:.2f}); adapter saved to {path}")


@app.command()
@_guarded
def ask(
    question: str = typer.Argument(..., help="A question for the student (closed-book)."),
    adapter: Optional[Path] = typer.Option(None, help="An adapter folder from `seal learn`."),
    version: Optional[str] = typer.Option(None, help="A continual student version or alias (prod, student-v3)."),
    config: Optional[Path] = ConfigOpt,
    max_new_tokens: Optional[int] = typer.Option(None, help="Defaults to eval.max_new_tokens."),
    set_: Optional[list[str]] = SetOpt,
):
    """Ask the student a question, with or without a learned adapter."""
    from agent.closed_book import answer

    if not question.strip():
        _fail("question is empty")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        _fail(f"{adapter} is not an adapter folder (no adapter_config.json)")
    cfg = _config(config, set_)
    rt = _runtime(cfg)
    name = None
    if adapter is not None:
        rt.student.load(adapter, "asked")
        name = "asked"
    elif version is not None:
        from student.stack import StackError, StackStore, load_version

        store = StackStore(Path(cfg.continual.state_dir) / "stack")
        try:
            m = store.resolve(version)
            name = load_version(store, rt.student, m) or None
        except StackError as e:
            _fail(str(e))
        if name and cfg.continual.routing.enabled:  # as served: only the adapter of the question's document
            from agent.routing import RoutingCache
            from agent.continual import memory_target
            from memory.store import MemoryStore

            name = RoutingCache(MemoryStore(memory_target(cfg)), cfg.continual.routing,
                                cfg.continual.canary).get(m, name) or name
    console.print(answer(rt.student, name, [question], max_new_tokens or cfg.eval.max_new_tokens, 1)[0])


@app.command("eval")
@_guarded
def eval_cmd(
    passages: Path = typer.Option(..., help="SQuAD/SEAL-style JSON list of passages with questions."),
    conditions: str = typer.Option("none,learn,passage,passage-repeat",
                                   help="Comma list: none, learn (the configured learning mode), passage, "
                                        "passage-repeat, self-edit, self-edit-unguarded, external:FILE, "
                                        "teacher:RUN@N."),
    canary: bool = typer.Option(True, help="Also measure the general-capability canary and drift after every "
                                           "adaptation (what each condition costs the model)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use the first N passages (after --offset)."),
    offset: int = typer.Option(0, min=0, help="Skip the first K passages."),
    every: int = typer.Option(1, min=1, help="Take every K-th passage (spreads a sample over all titles)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; an existing one is resumed."),
    shard: str = typer.Option("0/1", help="I/N: this process takes every N-th selected passage from the I-th, so "
                                           "N processes (one per core) can share one --out directory."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Closed-book evaluation of update conditions, one fresh adapter per passage and condition."""
    from agent.experiment import EvalRun, parse_conditions
    from agent.graders import LocalJudge, OpenAIJudge
    from agent.report import markdown, write_report
    from agent.runtime import new_run_dir
    from memory.documents import load_passages

    cfg = _config(config, set_)
    conds = parse_conditions(conditions)
    try:
        si, sn = (int(x) for x in shard.split("/"))
        if not 0 <= si < sn:
            raise ValueError
    except ValueError:
        _fail(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    ps = load_passages(passages)[offset::every]
    ps = ps[:limit] if limit else ps
    if not ps:
        _fail("no passages selected")
    if not any(p.questions for p in ps):
        _fail(f"{passages}: the selected passages have no questions to evaluate")
    if cfg.eval.judge.kind == "openai":
        try:
            judge = OpenAIJudge.from_settings(cfg.eval.judge)
        except ValueError as e:
            _fail(str(e))
    rt = _runtime(cfg)
    if cfg.eval.judge.kind == "local":
        judge = LocalJudge(lambda: rt.student.use(None), rt.student.tokenizer)
    elif cfg.eval.judge.kind == "none":
        judge = None
    run = new_run_dir(cfg, "eval", out)
    err.print(f"writing to {run}")
    general = None
    if canary or (any(c.name == "learn" for c in conds) and cfg.train.retain.weight > 0):
        from agent.canary import GeneralMonitor

        general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    runner = EvalRun(rt, conds, run, log=lambda m: err.print(m), judge=judge, progress=sys.stderr.isatty(),
                     general=general)
    runner.run(ps, on_passage=lambda i: write_report(run, cfg.seed), shard=(si, sn))
    summary = write_report(run, cfg.seed)
    typer.echo(markdown(summary))
    console.print(f"records: {run / 'records.jsonl'}\nsummary: {run / 'summary.json'}")


@app.command()
@_guarded
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `seal eval`.")):
    """Recompute and print the summary table of an eval run (works on a partial run)."""
    from agent.report import markdown, write_report

    if not (run_dir / "records.jsonl").is_file():
        _fail(f"{run_dir} has no records.jsonl (not a `seal eval` run directory)")
    typer.echo(markdown(write_report(run_dir)))


def _learner(cfg: SealConfig):
    from agent.continual import open_learner

    return open_learner(_runtime(cfg).student, cfg)


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


@app.command()
@_guarded
def forgetting(
    out: Optional[Path] = typer.Option(None, help="Folder for forgetting.png/svg and forgetting.json."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Print the accuracy ledger R[version][document] and forgetting metrics; write plots."""
    from agent.continual import forgetting_report, has_state, memory_target
    from agent.forgetting import plot
    from memory.store import MemoryStore

    cfg = _config(config, set_)
    if not has_state(cfg):
        _fail(f"no continual state at {cfg.continual.state_dir} (run `seal ingest` first)")
    rep = forgetting_report(MemoryStore(memory_target(cfg)))
    print_forgetting(rep.to_json() | {"routing": cfg.continual.routing.enabled})
    out = out or Path(cfg.continual.state_dir) / "reports"
    paths = plot(rep, out)
    (out / "forgetting.json").write_text(json.dumps(rep.to_json(), indent=2))
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
@_guarded
def adapters(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """List student versions, their adapters and documents, update outcomes and aliases."""
    from memory.store import MemoryStore
    from student.stack import StackStore

    cfg = _config(config, set_)
    root = Path(cfg.continual.state_dir)
    store = StackStore(root / "stack")
    from agent.continual import memory_target

    ups = {u["version"]: u for u in MemoryStore(memory_target(cfg)).updates()}
    aliases = store.aliases()
    t = Table(title=f"student versions in {root}")
    for c in ("version", "aliases", "adapters", "docs", "status", "gain", "forgetting", "note"):
        t.add_column(c)
    for v in store.versions():
        m, u = store.manifest(v), ups.get(v, {})
        t.add_row(m.name, ",".join(a for a, x in aliases.items() if x == v), str(len(m.adapters)),
                  str(len(m.doc_ids)), u.get("status", ""), "" if u.get("gain") is None else f"{u['gain']:+.2f}",
                  "" if u.get("forgetting") is None else f"{u['forgetting']:.2f}", u.get("reason") or m.note)
    console.print(t)


@app.command()
@_guarded
def promote(version: str = typer.Argument(..., help="student-vN, N, or an alias"),
            alias: str = typer.Option("prod", help="Alias to move (rollback = promote an earlier version)."),
            config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Point an alias (default prod) at a version: promotion and rollback are the same move."""
    from student.stack import StackError, StackStore

    cfg = _config(config, set_)
    store = StackStore(Path(cfg.continual.state_dir) / "stack")
    try:
        m = store.resolve(version)
        store.verify(m)
        with store.writer():
            store.set_alias(alias, m.version)
    except StackError as e:
        _fail(str(e))
    console.print(f"{alias} -> {m.name} ({len(m.adapters)} adapters, {len(m.doc_ids)} documents)")


@app.command("remove-doc")
@_guarded
def remove_doc(doc_id: str = typer.Argument(..., help="Document id (see `seal adapters` / forgetting.json)."),
               config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Remove one document's adapter from prod (a new version); report what else changed on the probes."""
    from agent.continual import remove_document

    cfg = _config(config, set_)
    lr = _learner(cfg)
    try:
        new, changes = remove_document(lr, doc_id)
    except ValueError as e:
        _fail(str(e))
    console.print(f"prod -> {new.name}")
    for d, (b, a) in changes.items():
        console.print(f"  {d}{' (removed)' if d == doc_id else ''}: {b:.2f} -> {a:.2f}")


if __name__ == "__main__":
    app()


from agent import cli_arc, cli_rl, cli_service, cli_vllm  # noqa: E402,F401  (registers arc, rl, serve, ..., vllm-*)
