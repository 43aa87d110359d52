"""Versioned schema: each component of the state database (the memory store, the job store) records the schema
version it is at in `schema_version`, and opening a database applies the recorded migrations it lacks, in
order, in one transaction. An old state folder upgrades in place; a database written by a newer release is
refused with the versions named instead of being half understood.

A migration is a function of a connection. Adding a table is `create(...)` (checkfirst, so a database that
predates versioning but already has the table is adopted as is); changing one is SQL written for both
dialects. Append migrations, never edit a released one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Column, Connection, Engine, Float, Integer, MetaData, String, Table, select, text

VERSIONS_META = MetaData()
SCHEMA_VERSION = Table("schema_version", VERSIONS_META, Column("component", String(32), primary_key=True),
                       Column("version", Integer, nullable=False), Column("applied_at", Float, nullable=False))


class SchemaError(RuntimeError):
    """A database this code cannot use as it is (written by a newer release)."""


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    apply: Callable[[Connection], None]


def create(*tables: Table) -> Callable[[Connection], None]:
    """A migration that adds tables (and their indexes) unless they exist."""
    def run(conn: Connection) -> None:
        for t in tables:
            t.create(conn, checkfirst=True)
    return run


def current_version(engine: Engine, component: str) -> int:
    """0 for a database that has never recorded one (new, or made before versioning)."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, SCHEMA_VERSION.name):
            return 0
        v = conn.execute(select(SCHEMA_VERSION.c.version).where(SCHEMA_VERSION.c.component == component)).scalar()
        return int(v or 0)


def _refuse_newer(component: str, found: int, latest: int) -> None:
    if found > latest:
        raise SchemaError(f"the {component} schema of this database is version {found}, newer than this code "
                          f"knows (version {latest}): upgrade seal-agent, or open a state folder of this release")


def migrate(engine: Engine, component: str, migrations: list[Migration]) -> int:
    """Bring `component` to the last migration's version; returns it. Concurrent openers serialize on the
    write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock per component)."""
    latest = migrations[-1].version
    if [m.version for m in migrations] != list(range(1, latest + 1)):
        raise ValueError(f"{component}: migrations must be numbered 1..N in order")
    found = current_version(engine, component)
    _refuse_newer(component, found, latest)
    if found == latest:
        return found
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:c))"), {"c": "seal-schema-" + component})
        SCHEMA_VERSION.create(conn, checkfirst=True)
        row = conn.execute(select(SCHEMA_VERSION.c.version).where(SCHEMA_VERSION.c.component == component)).scalar()
        found = int(row or 0)  # again, under the lock: another process may have migrated meanwhile
        _refuse_newer(component, found, latest)
        for m in migrations:
            if m.version > found:
                m.apply(conn)
        values = {"version": latest, "applied_at": time.time()}
        if row is None:
            conn.execute(SCHEMA_VERSION.insert().values(component=component, **values))
        else:
            conn.execute(SCHEMA_VERSION.update().where(SCHEMA_VERSION.c.component == component).values(**values))
    return latest
