"""`seal serve | worker | ingest | status | demo`: the long-running agent from the command line."""
from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import ConfigOpt, SetOpt, app, console, err, fail, guarded, load_runtime, print_forgetting, read_config
from core.config import SealConfig
from core.extras import require

UrlOpt = typer.Option(None, "--url", help="Talk to a running `seal serve` (e.g. http://127.0.0.1:8000) "
                                          "instead of the local state.")
KeyOpt = typer.Option(None, "--api-key", help="Bearer key for --url (default: $SEAL_API_KEY, then the write key "
                                             "in $SEAL_API_KEYS, then the key `seal serve` saved in the state folder).")
ROOT = Path(__file__).resolve().parents[1]


def _key_file(cfg: SealConfig) -> Path:
    return Path(cfg.continual.state_dir) / "api-key"


def _server_keys(cfg: SealConfig) -> dict[str, str]:
    """Configured keys; with none, one write key made for this state folder (saved 0600, printed once)."""
    from api.auth import KeyFormatError, load_keys

    try:
        keys = load_keys(cfg.service.api_keys)
    except KeyFormatError as e:
        fail(str(e))
    if keys:
        return keys
    f = _key_file(cfg)
    if f.is_file():
        key = f.read_text().strip()
    else:
        f.parent.mkdir(parents=True, exist_ok=True)
        key = "seal-" + secrets.token_urlsafe(24)
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    err.print(f"no API keys configured: using the write key saved in {f} (set SEAL_API_KEYS to choose your own)")
    return {key: "write"}


def _client(cfg: SealConfig, url: str, api_key: Optional[str]):
    from agent.client import SealClient
    from api.auth import KeyFormatError, parse_keys

    key = api_key or os.environ.get("SEAL_API_KEY")
    if key is None and os.environ.get("SEAL_API_KEYS"):  # the server's variable: its write key, else its first
        try:
            keys = parse_keys(os.environ["SEAL_API_KEYS"])
        except KeyFormatError as e:
            fail(str(e))
        key = next((k for k, s in keys.items() if s == "write"), next(iter(keys), None))
    if key is None and _key_file(cfg).is_file():
        key = _key_file(cfg).read_text().strip()
    try:
        return SealClient(url, key)
    except ValueError as e:
        fail(str(e))


def _job_line(j: dict) -> str:
    r = j.get("result") or {}
    if j["state"] == "duplicate":
        return f"{'duplicate':9s} {j['title'][:40]!r}: {r.get('reason') or 'already learned'}"
    if j["state"] in ("promoted", "rejected") and r:
        fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        src = {"given": "the questions sent with it", "teacher": "probes the teacher wrote",
               "sentences": "probes from its own sentences", "teacher+sentences": "probes the teacher and its "
               "sentences wrote"}.get(
            r.get("probe_source") or "", "its probes")
        line = (f"{j['state']:9s} {r.get('name', '')}: {j['title'][:40]!r} accuracy on {src} "
                f"{fmt(r.get('before'))} -> {fmt(r.get('after'))}, forgetting {fmt(r.get('forgetting'))}")
        if r.get("canary") is not None and r.get("canary_base") is not None:
            line += (f", canary {100 * r['canary']:.1f}% (untouched {100 * r['canary_base']:.1f}%), drift "
                     f"{r['drift']:.4f}" if r.get('drift') is not None else "")
        if r.get("attempts"):
            line += f", {len(r['attempts']) + 1} tries"
        return line + (f" ({r['reason']})" if r.get("reason") else "")
    return f"{j['state']:9s} {j['title'][:40]!r}" + (f": {j['error']}" if j.get("error") else "")


def _out(prog: Progress):
    """Results go to stdout when it is piped (scripts), else above the live progress bar."""
    return prog.console if sys.stdout.isatty() else console


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _load_docs(path: Path, limit: Optional[int]):
    from core.documents import load_passages

    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        fail(f"{path}: no such file, or a folder without .json files")
    return [p for f in files for p in load_passages(f)][:limit]


def _doc_json(p) -> dict:
    return {"title": p.title, "context": p.context,
            "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]}


def _follow(client, jobs: list[dict]) -> list[dict]:
    """Wait for jobs with a progress bar; one line per finished job."""
    from core.states import TERMINAL

    with _progress() as prog:
        task = prog.add_task("learning", total=len(jobs))
        done: set[str] = set()

        def changed(j: dict) -> None:
            prog.update(task, description=f"{j['title'][:30]!r} {j['state']}")
            if j["state"] in TERMINAL and j["id"] not in done:
                done.add(j["id"])
                prog.advance(task)
                _out(prog).print(_job_line(j))

        return client.wait([j["id"] for j in jobs], on_change=changed)


@app.command()
@guarded
def serve(
    host: Optional[str] = typer.Option(None, help="Default: service.host."),
    port: Optional[int] = typer.Option(None, help="Default: service.port."),
    mode: Optional[str] = typer.Option(None, help="embedded (default: in-process worker) or celery."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Run the agent's HTTP API (OpenAPI docs at /docs). Embedded mode also runs the worker in this process."""
    import uvicorn

    from agent.service import Agent
    from api.app import create_app

    cfg = read_config(config, set_)
    if mode is not None:
        if mode not in ("embedded", "celery"):
            fail(f"--mode must be embedded or celery, not {mode!r}")
        cfg = cfg.with_overrides(service={"mode": mode})
    h, p = host or cfg.service.host, cfg.service.port if port is None else port
    check_port(h, p)  # before the model loads or anything is written
    service_logging()
    keys = _server_keys(cfg)
    if cfg.service.mode == "celery":
        check_broker(cfg)
    with err.status(f"loading model {cfg.model.source} ..."):
        agent = Agent.open(cfg)
    err.print(f"seal-agent ({cfg.service.mode}) on http://{h}:{p}  (audit page: http://{h}:{p}/ui, API docs: "
              f"http://{h}:{p}/docs, state: {Path(cfg.continual.state_dir).resolve()})")
    try:
        uvicorn.run(create_app(agent, keys), host=h, port=p, log_level="info")
    finally:
        agent.close()


def service_logging() -> None:
    """The service's own lines (job transitions, worker, routing) beside uvicorn's, with a timestamp; library
    deprecation chatter is kept out of an operator's log."""
    import logging
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


def check_port(host: str, port: int) -> None:
    """A port in use is one line and exit 2, before the model loads or a state folder or key file is written."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        fail(f"cannot resolve --host {host!r}: {e}")
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            fail(f"cannot listen on {host}:{port}: {e.strerror or e} (is another seal serve running? use --port)")


def check_broker(cfg: SealConfig) -> None:
    redis = require("redis", "the distributed mode")
    try:
        redis.Redis.from_url(cfg.service.broker_url, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        fail(f"cannot reach the broker at {cfg.service.broker_url}: {e}")


@app.command()
@guarded
def worker(
    name: Optional[str] = typer.Option(None, help="Worker node name (default: seal-<pid>@<host>)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
    preload: bool = typer.Option(True, help="Load the model before taking tasks (else on the first task)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Run a Celery worker for the distributed mode (one job at a time; start N of them for N jobs at once,
    student updates are still serialized by the stack's update lock)."""
    from agent.celery_app import make_celery

    cfg = read_config(config, set_)
    check_broker(cfg)
    if preload:
        with err.status(f"loading model {cfg.model.source} ..."):
            celery = make_celery(cfg, preload=True)
    else:
        celery = make_celery(cfg)
    celery.worker_main(["worker", "--pool=solo", f"--loglevel={loglevel}", "-Q", cfg.service.queue,
                        "-n", name or f"seal-{os.getpid()}@%h", "--without-gossip", "--without-mingle"])


@app.command()
@guarded
def ingest(
    path: Path = typer.Argument(..., help="A JSON file of passages, or a folder of them (*.json)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Learn at most N documents."),
    url: Optional[str] = UrlOpt,
    api_key: Optional[str] = KeyOpt,
    wait: bool = typer.Option(True, help="With --url: wait for the jobs and report each one."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Stream documents into the agent, one job per document. Without --url the jobs run in this process on
    the local state (the same pipeline a worker runs); unfinished jobs from an earlier run are resumed first."""
    cfg = read_config(config, set_)
    docs = _load_docs(path, limit)
    if url:
        from agent.client import ApiError

        client = _client(cfg, url, api_key)
        try:
            jobs = []
            step = cfg.service.max_documents_per_request
            for i in range(0, len(docs), step):
                jobs += client.submit([_doc_json(p) for p in docs[i:i + step]])
            err.print(f"submitted {len(jobs)} document(s) to {url}")
            if wait:
                _follow(client, jobs)
            else:
                for j in jobs:
                    console.print(f"{j['id']} {j['state']}")
        except ApiError as e:
            fail(str(e))
        return
    from agent.worker import open_worker, run_job
    from core.states import TERMINAL

    rt = load_runtime(cfg)
    ctx = open_worker(cfg, rt)
    for p in docs:
        ctx.jobs.submit(p)
    pending = ctx.jobs.unfinished()
    with _progress() as prog:
        task = prog.add_task("learning", total=len(pending))
        for jid in pending:
            j = ctx.jobs.get(jid)
            prog.update(task, description=f"{j.title[:30]!r}")
            job = run_job(ctx, jid)
            prog.advance(task)
            if job is not None and job.state in TERMINAL:
                _out(prog).print(_job_line(job.to_json()))


@app.command()
@guarded
def status(
    url: Optional[str] = UrlOpt,
    api_key: Optional[str] = KeyOpt,
    limit: int = typer.Option(10, min=1, max=1000, help="Recent jobs to list."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Jobs by state, queue depth, aliases, and the most recent jobs."""
    cfg = read_config(config, set_)
    if url:
        from agent.client import ApiError

        client = _client(cfg, url, api_key)
        try:
            st, jobs = client.status(), client.jobs(limit)
        except ApiError as e:
            fail(str(e))
    else:
        from agent.continual import has_state, memory_target
        from memory.jobs import JobStore
        from student.stack import StackStore

        if not has_state(cfg):
            fail(f"no agent state at {cfg.continual.state_dir} (run `seal ingest` or `seal serve` first)")
        store = JobStore(memory_target(cfg))
        stack = StackStore(Path(cfg.continual.state_dir) / "stack")
        st = {"mode": "local", "jobs": store.counts(), "queue_depth": None, "aliases": stack.aliases(),
              "versions": len(stack.versions())}
        jobs = [j.to_json() for j in store.list(limit=limit)]
    counts = ", ".join(f"{k} {v}" for k, v in st["jobs"].items() if v)
    console.print(f"[bold]{st['mode']}[/]: {st['versions']} versions, aliases "
                  + (", ".join(f"{a} -> student-v{v}" for a, v in st["aliases"].items()) or "none")
                  + f"; jobs: {counts or 'none'}"
                  + (f"; queue depth {st['queue_depth']}" if st.get("queue_depth") is not None else ""))
    console.print(_jobs_table("recent jobs", jobs, "%H:%M:%S"))


def _jobs_table(title: str, jobs: list[dict], when: str) -> Table:
    t = Table(title=title)
    for c in ("job", "state", "document", "title", "attempts", "updated"):
        t.add_column(c, overflow="fold")
    for j in jobs:
        t.add_row(j["id"], j["state"], j["doc_id"], j["title"][:40], str(j["attempts"]),
                  time.strftime(when, time.localtime(j["updated_at"])))
    return t


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


GENERAL_QUESTIONS = ("What is the capital of France?", "How many days are in a week?",
                     "Who wrote Romeo and Juliet?", "What color is the sky on a clear day?")


def _load_held_out(path: Optional[Path]) -> list[dict]:
    from core.documents import DocumentFormatError, read_json

    if path is None:
        return []
    data = read_json(path)
    qs = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(qs, list) or not all(isinstance(q, dict) and all(isinstance(q.get(k), str) and q[k]
                                                                       for k in ("title", "question", "answer"))
                                           for q in qs):
        raise DocumentFormatError(f"{path}: expected {{questions: [{{title, question, answer}}]}}")
    return qs


def _held_out_questions(client, max_tokens: int, prod: str, docs, held_out: list[dict]) -> None:
    """Questions about the learned documents that neither training nor the gate saw: what a user would ask."""
    from evaluation.closed_book import question_prompt
    from evaluation.graders import contains

    titles = {p.title for p in docs}
    qs = [q for q in held_out if q["title"] in titles]
    if not qs:
        return
    t = Table(title="questions never sent to the service (held out from training and the gate)")
    for c in ("question", "gold", "base", prod):
        t.add_column(c, overflow="fold")
    right = {"base": 0, prod: 0}
    for q in qs:
        row = []
        for m in ("base", prod):
            a = client.chat(m, question_prompt(q["question"]), max_tokens=max_tokens)["choices"][0]["message"]["content"]
            right[m] += contains(a, q["answer"]) > 0
            row.append(a)
        t.add_row(q["question"], q["answer"], *row)
    console.print(t)
    console.print(f"held-out questions answered (gold contained): base {right['base']}/{len(qs)}, "
                  f"{prod} {right[prod]}/{len(qs)}")


def _general_questions(client, max_tokens: int, prod: str) -> None:
    """What learning must not cost: a few things the untouched model knows, asked of base and prod."""
    from evaluation.closed_book import question_prompt

    t = Table(title="general questions (the student must still know what the base model knows)")
    t.add_column("question")
    t.add_column("base", overflow="fold")
    t.add_column(prod, overflow="fold")
    for q in GENERAL_QUESTIONS:
        row = [client.chat(m, question_prompt(q), max_tokens=max_tokens)["choices"][0]["message"]["content"]
               for m in ("base", prod)]
        t.add_row(q, *row)
    console.print(t)


@app.command()
@guarded
def demo(
    documents: Path = typer.Option(ROOT / "examples/passages.json", help="Passages to stream in."),
    n: int = typer.Option(3, min=1, help="How many of them."),
    port: int = typer.Option(0, help="Port for the embedded service (0 = any free port)."),
    held_out_file: Optional[Path] = typer.Option(ROOT / "examples/held_out.json", "--held-out",
                                                 help="Questions about the documents that are never sent to the "
                                                      "service, asked after learning ({questions: [{title, "
                                                      "question, answer}]})."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """The main job, end to end: start the embedded service, stream documents into it over HTTP, ask the
    student about one of them, and print the forgetting table. Writes everything under runs/demo-*/."""
    import uvicorn

    from agent.client import SealClient
    from agent.service import Agent
    from api.app import create_app
    from core.runs import new_run_dir
    from evaluation.closed_book import question_prompt

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not the demo's output
    cfg = read_config(config, set_)
    docs = _load_docs(documents, n)
    held_out = _load_held_out(held_out_file)
    run = new_run_dir(cfg, "demo")
    cfg = cfg.with_overrides(continual={"state_dir": str(run / "state")}, service={"mode": "embedded"})
    key = "demo-" + secrets.token_urlsafe(16)
    with err.status(f"starting the embedded service ({cfg.model.source}) ..."):
        t = time.perf_counter()
        agent = Agent.open(cfg)
        host = "127.0.0.1"
        port = port or _free_port(host)
        server = uvicorn.Server(uvicorn.Config(create_app(agent, {key: "write"}), host=host, port=port,
                                               log_level="warning"))
        th = threading.Thread(target=server.run, daemon=True)
        th.start()
        while not server.started:
            if not th.is_alive():
                fail(f"the service did not start on {host}:{port}")
            time.sleep(0.05)
    url = f"http://{host}:{port}"
    err.print(f"service up at {url} in {time.perf_counter() - t:.1f}s (API docs at {url}/docs; state in {run})")
    client = SealClient(url, key)
    try:
        jobs = client.submit([_doc_json(p) for p in docs])
        err.print(f"streamed {len(jobs)} document(s) in: {', '.join(repr(p.title) for p in docs)}")
        _follow(client, jobs)
        prod = "seal-student@prod"
        if prod not in client.models():
            err.print("[yellow]no update was promoted[/] (each refusal and its reason is in the job lines above): "
                      "prod is still the untouched model, so `base` is asked twice below")
            prod = "base"
        asked = next((p for p in docs if p.questions), None)
        if asked is not None:
            q = asked.questions[0]
            t = Table(title=f"closed-book question about {asked.title!r} (gold: {q.answer!r})")
            t.add_column("model")
            t.add_column("answer", overflow="fold")
            for model in dict.fromkeys(("base", prod)):
                out = client.chat(model, question_prompt(q.question), max_tokens=cfg.eval.max_new_tokens)
                routed = out.get("seal_adapters")
                via = "" if routed is None else f", adapter {routed[0]}" if routed else ", routed to the base weights"
                t.add_row(f"{model} ({out['system_fingerprint']}{via})", out["choices"][0]["message"]["content"])
            console.print(f"[bold]Q:[/] {q.question}")
            console.print(t)
        _held_out_questions(client, cfg.eval.max_new_tokens, prod, docs, held_out)
        _general_questions(client, cfg.eval.max_new_tokens, prod)
        print_forgetting(client.forgetting())
        (run / "plot.png").write_bytes(client._call("GET", "/v1/forgetting/plot.png"))
        err.print(f"forgetting plot: {run / 'plot.png'}")
    finally:
        client.close()
        server.should_exit = True
        th.join(timeout=10)
        agent.close()


# -- what was HTTP-only: jobs, cancel, rollback, documents (against a running service) ------------------------------
ServerOpt = typer.Option(None, "--url", help="The running `seal serve` (default: http://service.host:service.port).")


def _remote(cfg: SealConfig, url: Optional[str], api_key: Optional[str]):
    return _client(cfg, url or f"http://{cfg.service.host}:{cfg.service.port}", api_key)


def _call(fn):
    from agent.client import ApiError

    try:
        return fn()
    except ApiError as e:
        fail(str(e))


@app.command()
@guarded
def jobs(state: Optional[str] = typer.Option(None, help="Only jobs in this state (queued, training, promoted, "
                                                         "rejected, failed, cancelled, duplicate, ...)."),
         limit: int = typer.Option(20, min=1, max=1000), url: Optional[str] = ServerOpt,
         api_key: Optional[str] = KeyOpt, config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """List jobs, newest first (GET /v1/jobs)."""
    cfg = read_config(config, set_)
    rows = _call(lambda: _remote(cfg, url, api_key).jobs(limit, state))
    console.print(_jobs_table(f"jobs{f' ({state})' if state else ''}", rows, "%Y-%m-%d %H:%M:%S"))


@app.command()
@guarded
def cancel(job_id: str = typer.Argument(..., help="A job id (see `seal jobs`)."), url: Optional[str] = ServerOpt,
           api_key: Optional[str] = KeyOpt, config: Optional[Path] = ConfigOpt, set_: Optional[list[str]] = SetOpt):
    """Cancel a job: a queued one at once, a running one at its next stage boundary (POST /v1/jobs/ID/cancel)."""
    cfg = read_config(config, set_)
    j = _call(lambda: _remote(cfg, url, api_key).cancel(job_id))
    console.print(f"{j['id']}: {j['state']}" + (" (cancel requested: it stops at the next stage)"
                                                  if j["state"] not in ("cancelled",) else ""))


@app.command()
@guarded
def rollback(to: Optional[str] = typer.Option(None, help="The version to put back in prod (default: the previous "
                                                          "promoted one)."),
             url: Optional[str] = ServerOpt, api_key: Optional[str] = KeyOpt, config: Optional[Path] = ConfigOpt,
             set_: Optional[list[str]] = SetOpt):
    """Move prod back (POST /v1/adapters/rollback)."""
    cfg = read_config(config, set_)
    r = _call(lambda: _remote(cfg, url, api_key).rollback(to))
    console.print(f"prod -> {r['name']} ({r['documents']} documents)")


@app.command()
@guarded
def documents(q: Optional[str] = typer.Option(None, help="Only titles containing this."),
              limit: int = typer.Option(50, min=1, max=500), offset: int = typer.Option(0, min=0),
              url: Optional[str] = ServerOpt, api_key: Optional[str] = KeyOpt, config: Optional[Path] = ConfigOpt,
              set_: Optional[list[str]] = SetOpt):
    """List the documents the agent has seen, with where each was learned (GET /v1/documents)."""
    cfg = read_config(config, set_)
    page = _call(lambda: _remote(cfg, url, api_key).documents(limit, offset, q))
    t = Table(title=f"documents {offset + 1}-{offset + len(page['documents'])} of {page['total']}")
    for c in ("document", "title", "learned in", "in prod"):
        t.add_column(c, overflow="fold")
    for d in page["documents"]:
        t.add_row(d["doc_id"], d["title"][:50], f"student-v{d['learned_in']}" if d.get("learned_in") else "",
                  "yes" if d.get("in_prod") else "")
    console.print(t)
