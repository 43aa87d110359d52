"""`seal vllm-server` (start/stop a vLLM server) and `seal vllm-export` (a stack version as one adapter)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import ConfigOpt, SetOpt, app, console, err, fail, guarded, read_config


@app.command("vllm-server")
@guarded
def vllm_server(
    vllm_python: str = typer.Option(".venv-vllm/bin/python", help="The python of vLLM's own environment "
                                                                "(bash scripts/setup_vllm_cpu.sh builds one)."),
    check: bool = typer.Option(False, help="Start, wait until healthy, print the models, stop."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Run a vLLM server for the configured model with LoRA enabled (command: backend.vllm.command, or one
    built from the config) until Ctrl-C; or connect nothing and just `--check` that it starts."""
    from serving.backend import BackendError, VLLMClient
    from serving.vllm_server import VLLMServer, default_command, server_env
    from student.models import resolve_folder

    cfg = read_config(config, set_)
    s = cfg.backend.vllm
    command = list(s.command)
    if not command:
        if not Path(vllm_python).exists():
            fail(f"{vllm_python} not found: run `bash scripts/setup_vllm_cpu.sh` or set backend.vllm.command")
        folder, _ = resolve_folder(cfg.model)
        command = default_command(cfg, folder, vllm_python)
    log = Path(cfg.runs_dir) / "vllm-server.log"
    err.print(f"starting: {' '.join(command)}\n  log: {log}")
    server = VLLMServer(command, s.url, log, s.startup_timeout_s, env=server_env(cfg))
    t0 = time.perf_counter()
    try:
        server.start()
    except BackendError as e:
        fail(f"{e} (see {log})")
    try:
        ids = [m["id"] for m in VLLMClient(s.url).models()]
        console.print(f"vLLM healthy at {s.url} after {time.perf_counter() - t0:.0f}s; models: {', '.join(ids)}")
        if check:
            return
        console.print("set backend.kind=vllm for `seal serve` and workers; Ctrl-C stops the server")
        while server.proc.poll() is None:
            time.sleep(1)
        fail(f"the vLLM server exited with code {server.proc.returncode} (see {log})")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("vllm-export")
@guarded
def vllm_export(
    version: str = typer.Argument("prod", help="A version number or alias."),
    out: Optional[Path] = typer.Option(None, help="Folder (default: backend.vllm.export_dir/<immutable name>)."),
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
):
    """Fold a version's adapter stack into one standard PEFT adapter within backend.vllm.max_lora_rank, the
    folder a vLLM server (or anything else that loads one LoRA) takes."""
    from serving.backend import VLLMClient
    from serving.vllm_adapters import VLLMAdapters
    from student.export import fold_folders
    from student.stack import StackError, StackStore

    cfg = read_config(config, set_)
    stack = StackStore(Path(cfg.continual.state_dir) / "stack")
    try:
        m = stack.resolve(int(version) if version.isdigit() else version)
        stack.verify(m)
    except StackError as e:
        fail(str(e))
    if not m.adapters:
        fail(f"{m.name} has no adapters (it is the base model)")
    names = VLLMAdapters(VLLMClient(cfg.backend.vllm.url), stack, cfg.backend.vllm, Path("."))
    name = names.name_for(m)
    dest = out or (Path(cfg.continual.state_dir) / cfg.backend.vllm.export_dir / name)
    rep = fold_folders([stack.adapter_dir(a.id) for a in m.adapters], dest, cfg.backend.vllm.max_lora_rank)
    console.print(f"{m.name} ({rep.adapters} adapters, rank {rep.rank_in}) -> {rep.path} as rank {rep.rank_out}, "
                  f"relative error {rep.rel_error:.4f}; vLLM name {name}")
