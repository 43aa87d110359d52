"""The tree's layering holds (scripts/import_graph.py): no upward import, no cycle between folders, no private
name across modules, and the embedded path does not load the distributed mode's or the server's libraries."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_graph  # noqa: E402


def test_the_tree_has_no_upward_import_no_folder_cycle_and_no_private_name_across_modules():
    g = import_graph.build()
    assert len(g.modules) > 80  # it read the whole tree
    assert g.upward() == []
    assert g.cycles() == []
    assert g.private == []
    assert set(g.folder_edges()["core"]) == set()  # the bottom imports nothing of ours


def test_the_checker_catches_what_it_forbids(tmp_path):
    """Would the test above fail if the layering broke? Build a small tree that breaks each rule."""
    for f in import_graph.LAYERS:
        (tmp_path / f).mkdir()
        (tmp_path / f / "__init__.py").write_text("")
    (tmp_path / "student" / "a.py").write_text("def _hidden():\n    pass\n\ndef f():\n    from agent.b import g\n")
    (tmp_path / "agent" / "b.py").write_text("import student.a\nfrom student.a import _hidden\n\n"
                                             "def g():\n    return student.a._hidden\n")
    (tmp_path / "core" / "c.py").write_text("from core.d import x\n")
    (tmp_path / "core" / "d.py").write_text("x = 1\n")
    g = import_graph.build(tmp_path)
    assert g.upward() == ["student.a imports agent.b (student is below agent)"]
    assert g.cycles() == [["student", "agent", "student"]]
    assert sorted(g.private) == ["agent.b: from student.a import _hidden", "agent.b: student.a._hidden"]


@pytest.mark.timeout(300)
def test_the_embedded_path_does_not_import_the_queue_the_server_or_plotting():
    code = ("import sys\n"
            "import core.config, core.runs, student.adapters, student.stack, student.runtime, memory.store, "
            "memory.jobs, evaluation.canary, evaluation.report, teacher.writer, teacher.rl.rest_em, serving.server, "
            "agent.continual, agent.experiment\n"
            "print(sorted(m for m in ('celery', 'kombu', 'redis', 'fastapi', 'uvicorn', 'matplotlib', 'psycopg', "
            "'faiss', 'vllm', 'openai') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_http_client_needs_no_database_library():
    code = "import sys, agent.client\nprint('sqlalchemy' in sys.modules, 'torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_every_package_of_the_tree_ships_in_the_wheel():
    """pyproject lists packages explicitly: a new sub-package missing there is absent from an installed wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for f in import_graph.LAYERS
            for p in (ROOT / f).rglob("__init__.py")}
    assert tree == listed
