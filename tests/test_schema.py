"""Versioned schema (memory/schema.py): an old state database upgrades in place keeping its rows, the version is
recorded, and a database from a newer release is refused with the versions named. SQLite and PostgreSQL."""
import pytest
from sqlalchemy import MetaData, inspect, select, text

from memory.database import open_engine
from memory.jobs import JobStore
from memory.schema import SCHEMA_VERSION, SchemaError, current_version
from memory.store import DOCUMENTS, EMBEDDINGS, LEARNED, LEDGER, MIGRATIONS, PROBES, SEQUENCES, UPDATES, MemoryStore


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    return tmp_path / "m.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _old_database(target) -> None:
    """A state database as the first release wrote it: migration 1's tables only, no schema_version, one row."""
    engine = open_engine(target)
    old = MetaData()
    for t in (DOCUMENTS, PROBES, LEARNED, LEDGER, EMBEDDINGS, SEQUENCES, UPDATES):  # migration 1's tables
        t.to_metadata(old)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(DOCUMENTS.insert().values(doc_id="d0", title="T", context="C", added_at=1.0))
        conn.execute(LEDGER.insert().values(version=1, doc_id="d0", correct=0.5, total=2, measured_at=1.0))
    engine.dispose()


def test_an_old_database_upgrades_in_place_and_keeps_its_rows(target):
    _old_database(target)
    engine = open_engine(target)
    before = set(inspect(engine).get_table_names())
    assert "general" not in before and "ledger_answers" not in before and "schema_version" not in before
    assert current_version(engine, "memory") == 0

    store = MemoryStore(target)
    after = set(inspect(store.engine).get_table_names())
    assert {"general", "ledger_answers", "teacher_samples", "recitations", "schema_version"} <= after
    assert current_version(store.engine, "memory") == MIGRATIONS[-1].version == 5
    with store.engine.connect() as conn:
        assert conn.execute(select(LEDGER.c.correct).where(LEDGER.c.doc_id == "d0")).scalar() == 0.5
    store.record_general(1, 10, 12, 0.01)  # the new tables work
    assert store.general()[1]["correct"] == 10
    store.close()
    MemoryStore(target).close()  # opening again is a no-op
    with engine.connect() as conn:
        assert conn.execute(select(SCHEMA_VERSION.c.version)
                            .where(SCHEMA_VERSION.c.component == "memory")).scalar() == 5
    engine.dispose()


def test_a_database_from_a_newer_release_is_refused_with_the_versions_named(target):
    MemoryStore(target).close()
    JobStore(target).close()
    engine = open_engine(target)
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(SchemaError, match="memory schema of this database is version 99, newer than this code knows "
                                          r"\(version 5\)"):
        MemoryStore(target)
    with pytest.raises(SchemaError, match=r"jobs schema of this database is version 99, newer .*\(version 1\)"):
        JobStore(target)


def test_a_new_database_records_every_component(tmp_path):
    target = tmp_path / "new.sqlite"
    MemoryStore(target).close()
    JobStore(target).close()
    engine = open_engine(target)
    assert (current_version(engine, "memory"), current_version(engine, "jobs")) == (5, 1)
    engine.dispose()
