"""One way to reach the agent's relational state: a SQLite file (embedded default) or PostgreSQL by URL.

SQLAlchemy Core keeps the queries dialect-neutral; the two places where the dialects differ (upserts and
SQLite's locking) are handled here, so the stores above stay plain.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from core.extras import require


class DatabaseError(ValueError):
    """A database URL that cannot be used."""


def database_url(target: str | Path) -> str:
    """A path means a SQLite file; `postgresql://...` is taken through psycopg 3."""
    s = str(target)
    if "://" not in s:
        Path(s).parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(s).resolve()}"
    scheme = s.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + s.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return s
    raise DatabaseError(f"unsupported database URL scheme {scheme!r}: use a file path, sqlite:///FILE or "
                        "postgresql://USER@HOST/DB")


READ_ONLY = "seal_read_only"


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads: on SQLite it takes no write lock (see open_engine)."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{READ_ONLY: True})
        with conn.begin():
            yield conn


def open_engine(target: str | Path) -> Engine:
    url = database_url(target)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # WAL: readers never block the one writer; FKs are off by default
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # a writer takes the write lock up front (a deferred read->write upgrade fails without waiting); a
            # reader (read_transaction) begins deferred, so API and audit reads never queue behind a write (WAL)
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    require("psycopg", "a PostgreSQL database")
    return create_engine(url, pool_pre_ping=True)


def insert(engine: Engine, table):
    """The dialect's INSERT that supports ON CONFLICT DO NOTHING / DO UPDATE (same API for both)."""
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)
