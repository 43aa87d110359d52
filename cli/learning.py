"""`seal learn | ask | eval | report | forgetting | adapters | promote | remove-doc`: one document at a time,
evaluations, and the version stack."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import (SHARD_HELP, ConfigOpt, SetOpt, app, console, err, fail, guarded, load_runtime, parse_shard,
                        print_forgetting, read_config)
from core.config import SealConfig
from core.extras import MissingExtra


def _answers_table(title: str, rows: list[tuple[str, str, str, str]]) -> Table:
    t = Table(title=title, show_lines=False)
    for col in ("question", "gold", "before", "after"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


@app.command()
@guarded
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
    from core.documents import load_passages
    from core.runs import new_run_dir
    from evaluation.closed_book import answer
    from evaluation.graders import contains
    from teacher.external import ExternalEdits

    cfg = read_config(config, set_)
    passages = load_passages(passage_file)
    if not 0 <= index < len(passages):
        fail(f"--index {index} out of range: {passage_file} has {len(passages)} passage(s)")
    p = passages[index]
    external = ExternalEdits(self_edit_file) if self_edit_file else None
    grounding = cfg.teacher.grounding.model_copy(update={"enabled": guard and cfg.teacher.grounding.enabled})
    rt = load_runtime(cfg)
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
@guarded
def ask(
    question: str = typer.Argument(..., help="A question for the student (closed-book)."),
    adapter: Optional[Path] = typer.Option(None, help="An adapter folder from `seal learn`."),
    version: Optional[str] = typer.Option(None, help="A continual student version or alias (prod, student-v3)."),
    config: Optional[Path] = ConfigOpt,
    max_new_tokens: Optional[int] = typer.Option(None, help="Defaults to eval.max_new_tokens."),
    set_: Optional[list[str]] = SetOpt,
):
    """Ask the student a question, with or without a learned adapter."""
    from evaluation.closed_book import answer

    if not question.strip():
        fail("question is empty")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        fail(f"{adapter} is not an adapter folder (no adapter_config.json)")
    cfg = read_config(config, set_)
    rt = load_runtime(cfg)
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
            fail(str(e))
        if name and cfg.continual.routing.enabled:  # as served: only the adapter of the question's document
            from agent.continual import memory_target
            from memory.store import MemoryStore
            from serving.routing import RoutingCache

            memory = MemoryStore(memory_target(cfg))
            routing = RoutingCache(memory, cfg.continual.routing, cfg.continual.canary).get(m, name)
            if routing is not None and cfg.serving.answer == "recite":  # as served: recite, then read
                from evaluation.closed_book import answer_routed_recite
                from teacher.passages import recitation_parts

                console.print(answer_routed_recite(rt.student, routing, [question],
                                                   lambda d: recitation_parts(memory.document(d)),
                                                   max_new_tokens or cfg.eval.max_new_tokens, 1,
                                                   k=cfg.serving.recite_parts)[0])
                return
            name = routing or name
    console.print(answer(rt.student, name, [question], max_new_tokens or cfg.eval.max_new_tokens, 1)[0])


@app.command("eval")
@guarded
def eval_cmd(
    passages: Path = typer.Option(..., help="SQuAD/SEAL-style JSON list of passages with questions."),
    conditions: str = typer.Option("none,open-book,learn,passage,passage-repeat",
                                   help="Comma list: none, open-book (the passage in the prompt: the ceiling), learn "
                                        "(the configured learning mode), recipe:NAME (a recipe of the config), "
                                        "passage, passage-repeat, self-edit, self-edit-unguarded, external:FILE, "
                                        "teacher:RUN@N."),
    questions: Optional[Path] = typer.Option(None, help="Extra questions asked of the same adapters and reported "
                                                        "as their own set (e.g. evaluation/data/"
                                                        "reworded_dev_other.json: {set?, questions: [{doc_id, "
                                                        "question, answer}]})."),
    repeat_matches: Optional[str] = typer.Option(None, help="The trained condition passage-repeat is step-matched "
                                                            "to, or recipe:NAME of the config without training it "
                                                            "(default: self-edit, else learn, else the first "
                                                            "recipe)."),
    recite: bool = typer.Option(False, help="Also answer every trained condition by recite-then-read: the adapter "
                                            "writes out the document from its title, the untouched model answers "
                                            "from that (rows named CONDITION+recite, same adapter)."),
    recite_only: Optional[str] = typer.Option(None, help="With --recite: comma list of the trained conditions "
                                                         "to also answer by recite-then-read (default: all)."),
    canary: bool = typer.Option(True, help="Also measure the general-capability canary and drift after every "
                                           "adaptation (what each condition costs the model)."),
    unrouted_canary: bool = typer.Option(True, help="With routing, also measure the canary with the adapter "
                                                     "applied to every question (its cost to the weights; one more "
                                                     "canary pass per adaptation)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Use the first N passages (after --offset)."),
    offset: int = typer.Option(0, min=0, help="Skip the first K passages."),
    every: int = typer.Option(1, min=1, help="Take every K-th passage (spreads a sample over all titles)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; an existing one is resumed."),
    shard: str = typer.Option("0/1", help=SHARD_HELP),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Closed-book evaluation of update conditions, one fresh adapter per passage and condition."""
    from agent.experiment import EvalRun, parse_conditions
    from core.documents import load_passages
    from core.runs import new_run_dir
    from evaluation.graders import LocalJudge, OpenAIJudge
    from evaluation.report import markdown, result_lines, write_report

    from agent.experiment import load_extra_questions

    cfg = read_config(config, set_)
    conds = parse_conditions(conditions, cfg.recipes)
    si, sn = parse_shard(shard)
    ps = load_passages(passages)[offset::every]
    ps = ps[:limit] if limit else ps
    if not ps:
        fail("no passages selected")
    extra = load_extra_questions(questions, ps) if questions else None
    if cfg.model.prepared:  # never evaluate on an article the prepared base trained on
        from student.prepared import read_manifest

        seen = set(read_manifest(cfg.model.prepared).get("titles", [])) & {p.title for p in ps}
        if seen:
            fail(f"the prepared base {cfg.model.prepared} trained on {len(seen)} of these articles "
                 f"(e.g. {sorted(seen)[0]!r}): evaluate on others (dev-other-articles.json)")
    if not any(p.questions for p in ps):
        fail(f"{passages}: the selected passages have no questions to evaluate")
    if cfg.eval.judge.kind == "openai":
        try:
            judge = OpenAIJudge.from_settings(cfg.eval.judge)
        except ValueError as e:
            fail(str(e))
    rt = load_runtime(cfg)
    if cfg.eval.judge.kind == "local":
        judge = LocalJudge(lambda: rt.student.use(None), rt.student.tokenizer)
    elif cfg.eval.judge.kind == "none":
        judge = None
    run = new_run_dir(cfg, "eval", out)
    err.print(f"writing to {run}")
    general = None
    from agent.experiment import trains_like_learn
    from core.config import learning_config, recipe_config

    retains = any(trains_like_learn(c.name) and (recipe_config(cfg, c.name[7:]) if c.name.startswith("recipe:")
                                                 else learning_config(cfg)).train.retain.weight > 0 for c in conds)
    if canary or retains:
        from evaluation.canary import GeneralMonitor

        general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    try:
        runner = EvalRun(rt, conds, run, log=lambda m: err.print(m), judge=judge, progress=sys.stderr.isatty(),
                         general=general, measure_general=canary, unrouted=unrouted_canary, passages=ps,
                         extra_questions=extra,
                         repeat_matches=repeat_matches, recite=recite or bool(recite_only),
                         recite_only=[c.strip() for c in recite_only.split(",") if c.strip()] if recite_only else None)
    except ValueError as e:
        fail(str(e))
    runner.run(ps, on_passage=lambda i: write_report(run, cfg.seed), shard=(si, sn))
    summary = write_report(run, cfg.seed)
    typer.echo(markdown(summary))
    typer.echo("\n".join(result_lines(summary)))
    console.print(f"records: {run / 'records.jsonl'}\nsummary: {run / 'summary.json'}")


@app.command()
@guarded
def prepare(
    passages: Path = typer.Option(..., help="Documents with questions to prepare on (e.g. ../shared/data/squad/"
                                            "prep.json); never evaluate on their articles afterwards."),
    out: Path = typer.Option(..., help="Folder for the prepared base (adapter/ + manifest.json); replaced "
                                       "atomically."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Learning to learn, once: train the student on documents together with questions about them, and write a
    checksummed prepared base that `model.prepared` folds into the weights (rebuilt bit for bit from the same
    command and seed)."""
    from agent.prepare import build_prepared
    from core.documents import load_passages

    cfg = read_config(config, set_)
    if cfg.model.prepared:
        fail("model.prepared is set: prepare from the untouched model (--set model.prepared=null)")
    ps = load_passages(passages)
    if not any(p.questions for p in ps) and cfg.prepare.qa_share > 0:
        fail(f"{passages}: no questions to prepare with (prepare.qa_share is {cfg.prepare.qa_share})")
    rt = load_runtime(cfg)
    general = None
    if cfg.prepare.retain and cfg.train.retain.weight > 0:
        from evaluation.canary import GeneralMonitor

        general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
        general.prepare(rt.student)
    command = "seal prepare --passages {} {}".format(passages.name, " ".join(f"--set {s}" for s in set_ or []))
    m = build_prepared(rt, ps, out, general, progress=sys.stderr.isatty(), command=command.strip())
    console.print(f"prepared base: {out} ({m['passages']} passages, {m['qa_pairs']} question pairs, "
                  f"{m['train']['steps']} steps, {m['seconds']:.0f}s); checksum {m['checksum'][:16]}\n"
                  f"use it with --set model.prepared={out}")


@app.command()
@guarded
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `seal eval`."),
           conditions: Optional[str] = typer.Option(None, help="Comma list: summarise only these conditions.")):
    """Recompute and print the summary table of an eval run (works on a partial run)."""
    from evaluation.report import markdown, result_lines, write_report

    if not (run_dir / "records.jsonl").is_file():
        fail(f"{run_dir} has no records.jsonl (not a `seal eval` run directory)")
    only = [c.strip() for c in conditions.split(",") if c.strip()] if conditions else None
    summary = write_report(run_dir, only=only)
    typer.echo(markdown(summary))
    typer.echo("\n".join(result_lines(summary)))


def _learner(cfg: SealConfig):
    from agent.continual import open_learner

    return open_learner(load_runtime(cfg).student, cfg)


@app.command()
@guarded
def forgetting(
    out: Optional[Path] = typer.Option(None, help="Folder for forgetting.png/svg and forgetting.json."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Print the accuracy ledger R[version][document] and forgetting metrics; write plots."""
    from agent.continual import forgetting_report, has_state, memory_target
    from evaluation.forgetting import plot
    from memory.store import MemoryStore

    cfg = read_config(config, set_)
    if not has_state(cfg):
        fail(f"no continual state at {cfg.continual.state_dir} (run `seal ingest` first)")
    rep = forgetting_report(MemoryStore(memory_target(cfg)))
    print_forgetting(rep.to_json() | {"routing": cfg.continual.routing.enabled})
    out = out or Path(cfg.continual.state_dir) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "forgetting.json").write_text(json.dumps(rep.to_json(), indent=2))
    try:
        paths = plot(rep, out)
    except MissingExtra as e:  # the table and the JSON need no plotting library
        paths = []
        err.print(f"plots skipped: {e}")
    console.print("wrote " + ", ".join(str(p) for p in [*paths, out / "forgetting.json"]))


@app.command()
@guarded
def adapters(config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """List student versions, their adapters and documents, update outcomes and aliases."""
    from memory.store import MemoryStore
    from student.stack import StackStore

    cfg = read_config(config, set_)
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
@guarded
def promote(version: str = typer.Argument(..., help="student-vN, N, or an alias"),
            alias: str = typer.Option("prod", help="Alias to move (rollback = promote an earlier version)."),
            config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Point an alias (default prod) at a version: promotion and rollback are the same move."""
    from student.stack import StackError, StackStore

    cfg = read_config(config, set_)
    store = StackStore(Path(cfg.continual.state_dir) / "stack")
    try:
        m = store.resolve(version)
        store.verify(m)
        with store.writer():
            store.set_alias(alias, m.version)
    except StackError as e:
        fail(str(e))
    console.print(f"{alias} -> {m.name} ({len(m.adapters)} adapters, {len(m.doc_ids)} documents)")


@app.command("remove-doc")
@guarded
def remove_doc(doc_id: str = typer.Argument(..., help="Document id (see `seal adapters` / forgetting.json)."),
               config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Remove one document's adapter from prod (a new version); report what else changed on the probes."""
    from agent.continual import remove_document

    cfg = read_config(config, set_)
    lr = _learner(cfg)
    try:
        new, changes = remove_document(lr, doc_id)
    except ValueError as e:
        fail(str(e))
    console.print(f"prod -> {new.name}")
    for d, (b, a) in changes.items():
        console.print(f"  {d}{' (removed)' if d == doc_id else ''}: {b:.2f} -> {a:.2f}")



@app.command("export")
@guarded
def export_cmd(version: str = typer.Argument("prod", help="student-vN, N, or an alias."),
               out: Path = typer.Option(..., "--out", "-o", help="The bundle file to write (a tar)."),
               config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Write one version, its adapters, documents and probes to a checksummed bundle (`seal import` reads it)."""
    from agent.continual import has_state
    from agent.transfer import export_version
    from student.stack import StackError

    cfg = read_config(config, set_)
    if not has_state(cfg):
        fail(f"no agent state at {cfg.continual.state_dir}")
    try:
        m, path = export_version(cfg, version, out)
    except (StackError, KeyError) as e:
        fail(str(e))
    console.print(f"exported {m.name} ({len(m.adapters)} adapters, {len(m.doc_ids)} documents) to {path}")


@app.command("import")
@guarded
def import_cmd(bundle: Path = typer.Argument(..., help="A bundle written by `seal export`."),
               promote_it: bool = typer.Option(False, "--promote", help="Also point prod (and latest) at it."),
               config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Add an exported version to this state as a new version (checksums and base model checked first)."""
    from agent.transfer import BundleError, import_bundle
    from student.stack import StackError

    cfg = read_config(config, set_)
    try:
        r = import_bundle(cfg, bundle, promote=promote_it)
    except (BundleError, StackError) as e:
        fail(str(e))
    what = "already imported as" if r.again else "imported as"
    console.print(f"{bundle}: {what} {r.name} ({r.adapters} adapters, {r.documents} documents)"
                  + ("; prod -> " + r.name if promote_it and not r.again else
                     f"; serve it with model seal-student-v{r.version}, or `seal promote {r.name}`"))
