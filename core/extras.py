"""Optional dependencies: the embedded path (one process, SQLite, in-process worker) needs none of them. A
feature that needs one imports it through `require`, so a missing package is a clear error naming the extra
to install, not an ImportError from deep inside a library."""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {  # import name -> the pip extra that installs it
    "celery": "distributed",  # service.mode: celery, rl.evaluate_on: celery
    "redis": "distributed",
    "psycopg": "postgres",  # continual.database: postgresql://...
    "matplotlib": "plots",  # forgetting and RL plots (PNG/SVG)
}


class MissingExtra(ImportError):
    """An optional dependency a feature needs is not installed."""


def require(module: str, feature: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module.split(".")[0])
        need = f" for {feature}" if feature else ""
        hint = f"pip install 'seal-agent[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingExtra(f"{module.split('.')[0]} is not installed{need}: {hint}") from e
