"""Optional dependencies (core/extras.py): a feature whose package is missing names the extra to install,
and the embedded path runs without them. A package is made missing by hiding it from the import system
(sys.modules[name] = None), which is what Python does for a package that is not installed."""
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.extras import MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]


def test_require_returns_the_module_when_it_is_installed():
    import json

    assert require("json") is json


@pytest.mark.parametrize("module,extra", [("celery", "distributed"), ("redis", "distributed"),
                                          ("psycopg", "postgres"), ("matplotlib", "plots")])
def test_a_missing_optional_package_names_its_extra(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=rf"{module} is not installed for the feature: pip install 'seal-agent\[{extra}\]'"):
        require(module, "the feature")


def test_a_postgresql_url_without_psycopg_says_which_extra(monkeypatch):
    from memory.database import open_engine

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtra, match=r"seal-agent\[postgres\]"):
        open_engine("postgresql://postgres@127.0.0.1/test")


def test_the_worker_command_without_celery_exits_2_naming_the_extra(monkeypatch, tmp_path):
    from cli.main import app

    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "agent.celery_app", raising=False)  # re-imported, so it asks for celery again
    res = CliRunner().invoke(app, ["worker", "--config", str(ROOT / "configs" / "tiny.yaml")])
    assert res.exit_code == 2
    assert "seal-agent[distributed]" in res.output


def test_the_forgetting_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    from evaluation.forgetting import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=r"seal-agent\[plots\]"):
        plot(None, tmp_path)  # checked before the report is read
