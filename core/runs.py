"""Process set-up shared by every command: threads and seeds, and a folder of its own for every run."""
from __future__ import annotations

import json
import os
import random
import secrets
from datetime import datetime, timezone
from pathlib import Path

import yaml

from core.config import SealConfig


def configure_process(cfg: SealConfig) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(cfg.runtime.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


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
