"""Process set-up shared by every command: threads, seeds, the one model load, run directories."""
from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from agent.config import SealConfig


def configure_process(cfg: SealConfig) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(cfg.runtime.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


@dataclass
class Runtime:
    cfg: SealConfig
    student: "object"  # student.adapters.Student
    model_name: str
    teacher: "object" = None  # the teacher's Student: the same object unless teacher.model names another base

    def __post_init__(self):
        if self.teacher is None:
            self.teacher = self.student


def open_runtime(cfg: SealConfig) -> Runtime:
    from student.adapters import Student
    from student.models import load_model

    configure_process(cfg)
    lm = load_model(cfg.model)
    teacher = None
    if cfg.teacher.model is not None:  # a separate base model for the teacher
        tm = load_model(cfg.teacher.model)
        teacher = Student(tm.model, tm.tokenizer, cfg.train)
    return Runtime(cfg, Student(lm.model, lm.tokenizer, cfg.train), lm.name, teacher)


def new_run_dir(cfg: SealConfig, kind: str, out: str | Path | None = None) -> Path:
    """Every run gets its own folder (never overwritten) with the config it ran with."""
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(cfg.runs_dir) / f"{kind}-{stamp}-{secrets.token_hex(2)}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.yaml"
    if not cfg_file.exists():
        data = cfg.model_dump()
        keys = len(data["service"]["api_keys"])
        data["service"]["api_keys"] = {}  # secrets never go into run folders (they are shared and archived)
        note = f"# service.api_keys: {keys} key(s) left out of this copy\n" if keys else ""
        cfg_file.write_text(note + yaml.safe_dump(data, sort_keys=False))
        (out / "meta.json").write_text(json.dumps(_provenance(), indent=2))
    return out


def _provenance() -> dict:
    """What produced a run: command line, code revision, library versions."""
    import subprocess
    import sys
    from importlib import metadata

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    versions = {}
    for pkg in ("torch", "transformers", "peft", "seal-agent"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"argv": sys.argv, "git_rev": rev, "python": sys.version.split()[0], "versions": versions,
            "started_at": datetime.now(timezone.utc).isoformat()}


def append_jsonl(path: Path, record: dict) -> None:
    """One line per record, fsynced: a killed run keeps everything it measured. Several processes may
    append to one file (e.g. shards of one evaluation): the line goes out in one locked write."""
    import fcntl

    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line from a killed writer
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill: ignore it, its unit is redone
    return out
