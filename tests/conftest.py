"""Shared fixtures: one tiny offline model per test session (built in seconds, cached in a temp folder)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(int(os.environ.get("SEAL_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_cfg(cache_dir):
    from core.config import load_config

    cfg = load_config(ROOT / "configs/tiny.yaml")
    return cfg.with_overrides(model={"cache_dir": str(cache_dir)})


@pytest.fixture(scope="session")
def tiny_config_file(tiny_cfg, tmp_path_factory) -> Path:
    import yaml

    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    data = tiny_cfg.model_dump()
    data["runs_dir"] = str(p.parent / "runs")
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture(scope="session")
def runtime(tiny_cfg):
    from student.runtime import open_runtime

    return open_runtime(tiny_cfg)


@pytest.fixture(autouse=True)
def _isolate_shared_student(request):
    """Tests share one tiny model; each must leave it as it found it (adapter ids such as a00001 repeat across
    tests' stacks, and a leftover one would be taken for another stack's)."""
    if "runtime" not in request.fixturenames:
        yield
        return
    st = request.getfixturevalue("runtime").student
    before = set(st.adapters())
    yield
    for n in set(st.adapters()) - before:
        st.drop(n)
    st.drop_free_slots()
    st.restore_base()


@pytest.fixture()
def passages_file(tmp_path) -> Path:
    data = json.loads((ROOT / "examples/passages.json").read_text())[:2]
    p = tmp_path / "passages.json"
    p.write_text(json.dumps(data))
    return p


@pytest.fixture()
def postgres_url():
    """A fresh, empty PostgreSQL database on the machine's server (dropped afterwards)."""
    import uuid

    import psycopg
    admin = os.environ.get("SEAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"seal_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        missing_service(f"no PostgreSQL server at {admin}: {e}")
    conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def missing_service(reason: str) -> None:
    """Skip locally; fail where the services are promised (CI sets SEAL_REQUIRE_SERVICES=1)."""
    if os.environ.get("SEAL_REQUIRE_SERVICES"):
        pytest.fail(reason + " (SEAL_REQUIRE_SERVICES is set: this test must not be skipped)")
    pytest.skip(reason)
