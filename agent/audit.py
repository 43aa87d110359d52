"""Read-only, paginated views of the agent's state for the audit page (api/ui.py, issue 16).

The existing report (agent.continual.forgetting_report) loads the whole ledger into Python; with 500
documents and 1,000 versions that is ~220,000 rows and a second per call. Here each view reads only what one
page shows (a window of versions x documents, a page of jobs or versions), and the curves are aggregated in
SQL with the same definitions as evaluation/forgetting.compute (tests check they agree). Nothing here writes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import func, select, text

from memory.jobs import EVENTS, JOBS, RUNNING, STATES, TERMINAL, JobStore
from memory.store import DOCUMENTS, GENERAL, LEARNED, LEDGER, LEDGER_ANSWERS, PROBES, UPDATES, MemoryStore
from student.stack import StackError, StackStore

STAGES = ("queued", *RUNNING)  # the states a job spends time in before its final one


def _acc(correct, total) -> float | None:
    return None if not total else float(correct) / total


def _chunks(xs: list, n: int = 500):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


@dataclass
class Audit:
    """The three stores the agent keeps (memory, jobs, stack); every method reads a bounded amount."""

    memory: MemoryStore
    jobs: JobStore
    stack: StackStore

    def _rows(self, stmt, engine=None, **params):
        from memory.database import read_transaction

        with read_transaction(engine or self.memory.engine) as c:
            return c.execute(stmt, params).fetchall() if params else c.execute(stmt).fetchall()

    # -- shared lookups (each a small table or an indexed read) ----------------------------------------------
    def statuses(self) -> dict[int, str]:
        return dict(self._rows(select(UPDATES.c.version, UPDATES.c.status)))

    def learned_at(self) -> dict[str, int]:
        return self.memory.learned_at()

    def titles(self, doc_ids) -> dict[str, str]:
        out = {}
        for part in _chunks(list(doc_ids)):
            out.update(dict(self._rows(select(DOCUMENTS.c.doc_id, DOCUMENTS.c.title)
                                       .where(DOCUMENTS.c.doc_id.in_(part)))))
        return out

    def _general(self, versions) -> dict[int, dict]:
        out = {}
        for part in _chunks(list(versions)):
            for v, c, n, d, info in self._rows(select(GENERAL.c.version, GENERAL.c.correct, GENERAL.c.total,
                                                      GENERAL.c.drift, GENERAL.c.info)
                                               .where(GENERAL.c.version.in_(part))):
                out[v] = {"canary": _acc(c, n), "drift": d, "info": json.loads(info or "{}")}
        return out

    def _updates(self, versions) -> dict[int, dict]:
        cols = ("version", "doc_id", "parent", "status", "reason", "gain", "forgetting", "info", "created_at")
        out = {}
        for part in _chunks(list(versions)):
            for r in self._rows(select(*(UPDATES.c[k] for k in cols)).where(UPDATES.c.version.in_(part))):
                d = dict(zip(cols, r))
                d["info"] = json.loads(d["info"] or "{}")
                out[d["version"]] = d
        return out

    def promoted_versions(self) -> list[int]:
        """The steps of the stream, as forgetting_report counts them: promoted, with a ledger or general row."""
        q = text("SELECT u.version FROM updates u WHERE u.status = 'promoted' AND "
                 "(EXISTS (SELECT 1 FROM ledger l WHERE l.version = u.version) OR "
                 "EXISTS (SELECT 1 FROM general g WHERE g.version = u.version)) ORDER BY u.version")
        return [r[0] for r in self._rows(q)]

    def measured_versions(self) -> list[int]:
        """Every version with a ledger row (promoted, refused candidates, removals); folds add none."""
        return [r[0] for r in self._rows(select(LEDGER.c.version).where(LEDGER.c.version > 0)
                                         .group_by(LEDGER.c.version).order_by(LEDGER.c.version))]

    # -- overview: small, polled by the page for live updates --------------------------------------------------
    def overview(self) -> dict:
        from memory.database import read_transaction

        with read_transaction(self.jobs.engine) as c:
            counts = dict(c.execute(select(JOBS.c.state, func.count()).group_by(JOBS.c.state)).fetchall())
            last_job = c.execute(select(func.max(JOBS.c.updated_at))).scalar()
        n_docs = self._rows(select(func.count()).select_from(DOCUMENTS))[0][0]
        n_learned = self._rows(select(func.count(func.distinct(LEARNED.c.doc_id))))[0][0]
        last_update = self._rows(select(func.max(UPDATES.c.version), func.max(UPDATES.c.created_at)))[0]
        base = self._general([0]).get(0)
        versions = self.stack.versions()
        aliases = self.stack.aliases()
        return {"jobs": {s: 0 for s in STATES} | counts, "documents": n_docs, "learned": n_learned,
                "versions": len(versions), "latest_version": versions[-1] if versions else None,
                "aliases": aliases, "canary_base": base["canary"] if base else None,
                "changed": [last_job, last_update[0], last_update[1], len(versions), sorted(aliases.items())]}

    # -- the forgetting matrix, one window at a time --------------------------------------------------------------
    def doc_order(self, view: str) -> list[str]:
        """Columns in learning order (as forgetting_report); `all` adds documents only ever refused, at their
        first try."""
        learned = self.learned_at()
        key = dict(learned)
        if view == "all":
            tried = self._rows(select(UPDATES.c.doc_id, func.min(UPDATES.c.version))
                               .where(UPDATES.c.doc_id.is_not(None)).group_by(UPDATES.c.doc_id))
            for d, v in tried:
                key.setdefault(d, v)
        return sorted(key, key=lambda d: (key[d], d))

    def matrix(self, view: str = "promoted", limit: int = 25, offset: int = 0, doc_limit: int = 30,
               doc_offset: int = 0, tail: bool = False) -> dict:
        """R[version][document] for a window of rows x columns, with what a hover needs (titles, probes, the
        version's status and reason); `tail` starts at the newest rows and columns."""
        versions = self.promoted_versions() if view == "promoted" else self.measured_versions()
        docs = self.doc_order(view)
        if tail:
            offset, doc_offset = max(0, len(versions) - limit), max(0, len(docs) - doc_limit)
        rows_v, cols = versions[offset:offset + limit], docs[doc_offset:doc_offset + doc_limit]
        learned = self.learned_at()
        cells: dict[tuple[int, str], tuple[float, int]] = {}
        if rows_v and cols:
            for part in _chunks(cols, 200):
                q = (select(LEDGER.c.version, LEDGER.c.doc_id, LEDGER.c.correct, LEDGER.c.total)
                     .where(LEDGER.c.version.in_([0, *rows_v]), LEDGER.c.doc_id.in_(part)))
                for v, d, c, n in self._rows(q):
                    cells[(v, d)] = (c, n)
        titles = self.titles(cols)
        probes: dict[str, list[dict]] = {d: [] for d in cols}
        for part in _chunks(cols):
            for d, qu, an, src in self._rows(select(PROBES.c.doc_id, PROBES.c.question, PROBES.c.answer,
                                                    PROBES.c.source).where(PROBES.c.doc_id.in_(part))
                                             .order_by(PROBES.c.doc_id, PROBES.c.idx)):
                probes[d].append({"question": qu, "answer": an, "source": src})
        ups, gen = self._updates(rows_v), self._general(rows_v)
        aliases = self.stack.aliases()

        def cell(v: int, d: str) -> dict | None:
            if (v, d) not in cells or (view == "promoted" and v > 0 and learned.get(d, v + 1) > v):
                return None  # not learned yet at v (forgetting_report's rule), or not measured
            c, n = cells[(v, d)]
            return {"value": _acc(c, n), "correct": c, "total": n}

        rows = []
        for v in rows_v:
            u = ups.get(v, {})
            r = (u.get("info") or {}).get("result") or {}
            rows.append({"version": v, "name": f"student-v{v}", "status": u.get("status"), "reason": u.get("reason"),
                         "doc_id": u.get("doc_id"), "aliases": sorted(a for a, x in aliases.items() if x == v),
                         "canary": gen.get(v, {}).get("canary"), "drift": gen.get(v, {}).get("drift"),
                         "before": r.get("before"), "after": r.get("after"),
                         "cells": [cell(v, d) for d in cols]})
        base = [cell(0, d) for d in cols] if any((0, d) in cells for d in cols) else None
        answered = bool(rows_v and cols) and any(self._rows(
            select(LEDGER_ANSWERS.c.version).where(LEDGER_ANSWERS.c.version.in_([0, *rows_v]),
                                                   LEDGER_ANSWERS.c.doc_id.in_(part)).limit(1))
            for part in _chunks(cols, 200))
        return {"view": view, "answers_recorded": answered, "total_versions": len(versions), "offset": offset,
                "limit": limit, "total_documents": len(docs), "doc_offset": doc_offset, "doc_limit": doc_limit,
                "documents": [{"id": d, "title": titles.get(d, d), "learned_in": learned.get(d), "probes": probes[d]}
                              for d in cols],
                "base": base, "rows": rows}

    def cell(self, version: int, doc_id: str) -> dict:
        """One cell of the matrix in full: the document's probe questions and reference answers and, when the
        monitor kept them, the version's own replies with a right/wrong mark each (version 0: the untouched
        model). KeyError: unknown document."""
        rows = self._rows(select(DOCUMENTS.c.title).where(DOCUMENTS.c.doc_id == doc_id))
        if not rows:
            raise KeyError(doc_id)
        probes = self._rows(select(PROBES.c.question, PROBES.c.answer, PROBES.c.source)
                            .where(PROBES.c.doc_id == doc_id).order_by(PROBES.c.idx))
        led = self._rows(select(LEDGER.c.correct, LEDGER.c.total, LEDGER.c.measured_at)
                         .where(LEDGER.c.version == version, LEDGER.c.doc_id == doc_id))
        kept = self._rows(select(LEDGER_ANSWERS.c.answers).where(LEDGER_ANSWERS.c.version == version,
                                                                 LEDGER_ANSWERS.c.doc_id == doc_id)) if led else []
        replies = json.loads(kept[0][0]) if kept else None
        u = self._updates([version]).get(version, {}) if version else {}
        by_question = {r["question"]: r for r in replies or []}
        out = []
        for k, (q, a, src) in enumerate(probes):
            # replies are kept in probe order; the question text guards the match
            r = replies[k] if replies and k < len(replies) and replies[k]["question"] == q else by_question.get(q)
            out.append({"question": q, "answer": a, "source": src,
                        "reply": None if r is None else r["reply"], "correct": None if r is None else r["correct"]})
        c, n, at = led[0] if led else (None, None, None)
        return {"version": version, "name": f"student-v{version}" if version else "untouched model",
                "doc_id": doc_id, "title": rows[0][0], "status": "base" if not version else u.get("status"),
                "reason": u.get("reason"), "value": _acc(c, n) if led else None, "correct": c, "total": n,
                "measured_at": at, "learned_in": self.learned_at().get(doc_id),
                "answers_recorded": replies is not None, "probes": out}

    # -- curves, aggregated in SQL ------------------------------------------------------------------------------
    # The cells of the promoted steps that count (document learned at or before the version), with each
    # version's position. CROSS JOIN fixes SQLite's join order (versions outer: index reads by version);
    # PostgreSQL plans it as an inner join.
    _CELLS = """
        WITH prom AS (
            SELECT u.version FROM updates u WHERE u.status = 'promoted' AND
              (EXISTS (SELECT 1 FROM ledger l WHERE l.version = u.version) OR
               EXISTS (SELECT 1 FROM general g WHERE g.version = u.version))),
        pos AS (SELECT version, ROW_NUMBER() OVER (ORDER BY version) AS p FROM prom),
        lv AS (SELECT doc_id, MIN(version) AS v FROM learned GROUP BY doc_id),
        cells AS (
            SELECT l.version AS v, l.doc_id AS d, CAST(l.correct AS FLOAT) / l.total AS acc, lv.v AS lv, pos.p AS p
            FROM pos CROSS JOIN ledger l CROSS JOIN lv
            WHERE l.version = pos.version AND lv.doc_id = l.doc_id AND lv.v <= l.version AND l.total > 0)
    """

    def curves(self) -> dict:
        """Per promoted version: average accuracy, BWT, canary and drift; retention by age (forgetting.compute's
        definitions, over the same promoted steps as forgetting_report)."""
        versions = self.promoted_versions()
        # BWT: R[v][d] - R[learned(d)][d] over documents learned before v (and measured when learned)
        per_version = {v: (a, b) for v, a, b in self._rows(text(self._CELLS + """
            SELECT c.v, AVG(c.acc), AVG(CASE WHEN c.lv < c.v THEN c.acc - CAST(l0.correct AS FLOAT) / l0.total END)
            FROM cells c LEFT JOIN ledger l0 ON l0.version = c.lv AND l0.doc_id = c.d AND c.lv < c.v
              AND l0.total > 0 AND c.lv IN (SELECT version FROM pos)
            GROUP BY c.v"""))}
        ages = self._rows(text(self._CELLS + """
            SELECT c.p - pl.p AS age, AVG(c.acc) FROM cells c JOIN pos pl ON pl.version = c.lv
            GROUP BY c.p - pl.p ORDER BY 1"""))
        avg = {v: a for v, (a, _) in per_version.items()}
        bwt = {v: b for v, (_, b) in per_version.items()}
        gen = self._general([0, *versions])
        base_rows = self._rows(select(LEDGER.c.correct, LEDGER.c.total).where(LEDGER.c.version == 0))
        base = [c / n for c, n in base_rows if n]
        g0 = gen.get(0)
        return {"versions": versions,
                "avg_accuracy": [avg.get(v) for v in versions], "bwt": [bwt.get(v) for v in versions],
                "canary": [gen[v]["canary"] if v in gen else None for v in versions],
                "drift": [gen[v]["drift"] if v in gen else None for v in versions],
                "canary_base": g0["canary"] if g0 else None,
                "base_avg": sum(base) / len(base) if base else None,
                "retention_by_age": {int(a): r for a, r in ages}}

    # -- documents and their provenance ----------------------------------------------------------------------------
    def documents(self, limit: int = 50, offset: int = 0, q: str | None = None) -> dict:
        """Each document: the version that learned it, whether prod holds it, its current accuracy (the latest
        measurement at or before prod on a version of prod's line) and the untouched model's."""
        where = [] if not q else [func.lower(DOCUMENTS.c.title).contains(q.lower())]
        total = self._rows(select(func.count()).select_from(DOCUMENTS).where(*where))[0][0]
        page = self._rows(select(DOCUMENTS.c.doc_id, DOCUMENTS.c.title, DOCUMENTS.c.added_at).where(*where)
                          .order_by(DOCUMENTS.c.added_at, DOCUMENTS.c.doc_id).limit(limit).offset(offset))
        ids = [r[0] for r in page]
        learned = self.learned_at()
        prod_v, prod_docs = self._prod()
        current = self._current(ids, prod_v)
        base = self._at(0, ids)
        n_jobs = dict(self._rows(select(JOBS.c.doc_id, func.count()).where(JOBS.c.doc_id.in_(ids))
                                 .group_by(JOBS.c.doc_id), engine=self.jobs.engine)) if ids else {}
        out = []
        for d, title, added in page:
            cv, ca = current.get(d, (None, None))
            out.append({"id": d, "title": title, "added_at": added, "learned_in": learned.get(d),
                        "in_prod": d in prod_docs, "current": ca, "current_version": cv, "base": base.get(d),
                        "jobs": n_jobs.get(d, 0)})
        return {"total": total, "offset": offset, "limit": limit, "prod": prod_v, "documents": out}

    def _at(self, version: int, ids: list[str]) -> dict[str, float | None]:
        return {d: _acc(c, n) for d, c, n in self._rows(select(LEDGER.c.doc_id, LEDGER.c.correct, LEDGER.c.total)
                                                         .where(LEDGER.c.version == version,
                                                                LEDGER.c.doc_id.in_(ids)))} if ids else {}

    def _current(self, ids: list[str], prod_v: int | None) -> dict[str, tuple[int, float | None]]:
        """doc -> (version, accuracy) of its latest measurement on prod's line (promoted or removal versions at
        or before prod). Index reads only: the ledger is keyed by (version, document)."""
        if prod_v is None or not ids:
            return {}
        line = sorted((v for v, s in self.statuses().items() if 0 < v <= prod_v and s in ("promoted", "removed")),
                      reverse=True)
        found: dict[str, tuple[int, float | None]] = {}
        for vs in (line[:20], line[20:]):  # the newest first: with the default monitor every learned doc is there
            missing = [d for d in ids if d not in found]
            if not missing or not vs:
                continue
            latest = self._rows(select(LEDGER.c.doc_id, func.max(LEDGER.c.version))
                                .where(LEDGER.c.version.in_(vs), LEDGER.c.doc_id.in_(missing))
                                .group_by(LEDGER.c.doc_id))
            by_version: dict[int, list[str]] = {}
            for d, v in latest:
                by_version.setdefault(v, []).append(d)
            for v, ds in by_version.items():  # usually one version (prod's) for the whole page
                found |= {d: (v, a) for d, a in self._at(v, ds).items()}
        return found

    def _prod(self) -> tuple[int | None, set[str]]:
        aliases = self.stack.aliases()
        if "prod" not in aliases:
            return None, set()
        try:
            return aliases["prod"], set(self.stack.manifest(aliases["prod"]).doc_ids)
        except StackError:
            return aliases["prod"], set()

    def document(self, doc_id: str) -> dict:
        """One document's probes, every measurement of it (with each version's status), and its jobs."""
        rows = self._rows(select(DOCUMENTS.c.title, DOCUMENTS.c.context).where(DOCUMENTS.c.doc_id == doc_id))
        if not rows:
            raise KeyError(doc_id)
        statuses = self.statuses()
        probes = self._rows(select(PROBES.c.question, PROBES.c.answer, PROBES.c.source)
                            .where(PROBES.c.doc_id == doc_id).order_by(PROBES.c.idx))
        hist = self._rows(select(LEDGER.c.version, LEDGER.c.correct, LEDGER.c.total)
                          .where(LEDGER.c.doc_id == doc_id).order_by(LEDGER.c.version))
        jobs = self._rows(select(JOBS.c.id, JOBS.c.state, JOBS.c.created_at).where(JOBS.c.doc_id == doc_id)
                          .order_by(JOBS.c.created_at.desc()).limit(50), engine=self.jobs.engine)
        prod_v, prod_docs = self._prod()
        return {"id": doc_id, "title": rows[0][0], "context": rows[0][1], "learned_in": self.learned_at().get(doc_id),
                "in_prod": doc_id in prod_docs, "prod": prod_v,
                "probes": [{"question": q, "answer": a, "source": s} for q, a, s in probes],
                "accuracy": [{"version": v, "status": "base" if v == 0 else statuses.get(v), "value": _acc(c, n),
                              "correct": c, "total": n} for v, c, n in hist],
                "jobs": [{"id": i, "state": s, "created_at": t} for i, s, t in jobs]}

    # -- jobs: a page, with each job's stage durations from its events -------------------------------------------
    def jobs_page(self, state: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        cols = [JOBS.c[k] for k in ("id", "doc_id", "title", "state", "attempts", "error", "result", "created_at",
                                    "updated_at", "started_at", "finished_at")]
        where = []
        if state == "running":
            where.append(JOBS.c.state.in_(RUNNING))
        elif state:
            where.append(JOBS.c.state == state)
        eng = self.jobs.engine
        total = self._rows(select(func.count()).select_from(JOBS).where(*where), engine=eng)[0][0]
        page = self._rows(select(*cols).where(*where).order_by(JOBS.c.created_at.desc(), JOBS.c.id)
                          .limit(limit).offset(offset), engine=eng)
        ids = [r[0] for r in page]
        events: dict[str, list[tuple[float, str]]] = {i: [] for i in ids}
        for part in _chunks(ids):
            for j, at, st in self._rows(select(EVENTS.c.job_id, EVENTS.c.at, EVENTS.c.state)
                                        .where(EVENTS.c.job_id.in_(part)).order_by(EVENTS.c.id), engine=eng):
                events[j].append((at, st))
        out, now = [], time.time()
        for r in page:
            m = r._mapping
            res = json.loads(m["result"] or "{}")
            out.append({k: m[k] for k in ("id", "doc_id", "title", "state", "attempts", "error", "created_at",
                                           "updated_at", "started_at", "finished_at")}
                       | {"stages": _stage_seconds(events[m["id"]], m["state"], now),
                          "result": _brief(res)})
        return {"total": total, "offset": offset, "limit": limit, "state": state, "jobs": out}

    # -- versions and their lineage ----------------------------------------------------------------------------------
    def versions_page(self, limit: int = 50, offset: int = 0, status: str | None = None) -> dict:
        """Newest first. Lineage: each version's parent, and what made it (learn, fold, merge, removal)."""
        versions = self.stack.versions()
        statuses = self.statuses()
        if status:
            versions = [v for v in versions if statuses.get(v) == status]
        page = sorted(versions, reverse=True)[offset:offset + limit]
        ups, gen = self._updates(page), self._general(page)
        aliases = self.stack.aliases()
        manifests = {}
        for v in page:
            try:
                manifests[v] = self.stack.manifest(v)
            except StackError:
                continue
        titles = self.titles({u["doc_id"] for u in ups.values() if u.get("doc_id")})
        out = []
        for v in page:
            m, u = manifests.get(v), ups.get(v, {})
            out.append(_version_row(v, m, u, gen.get(v, {}), aliases, titles))
        return {"total": len(versions), "offset": offset, "limit": limit, "aliases": aliases, "versions": out}

    def version(self, v: int) -> dict:
        """One version: its adapters and documents (titles), the update that made it, its canary's misses."""
        m = self.stack.manifest(v)  # StackError: unknown
        u, g = self._updates([v]).get(v, {}), self._general([v]).get(v, {})
        titles = self.titles(set(m.doc_ids) | ({u["doc_id"]} if u.get("doc_id") else set()))
        row = _version_row(v, m, u, g, self.stack.aliases(), titles)
        measured = self._rows(select(func.count(), func.avg(LEDGER.c.correct * 1.0 / LEDGER.c.total))
                              .where(LEDGER.c.version == v, LEDGER.c.total > 0))[0]
        info = g.get("info") or {}
        return row | {
            "adapters": [{"id": a.id, "kind": a.kind, "rank": a.rank, "merged": a.merged,
                          "documents": [{"id": d, "title": titles.get(d, d)} for d in a.doc_ids]} for a in m.adapters],
            "measured_documents": measured[0], "measured_mean": measured[1],
            "canary_misses": [{"question": q, "reply": r} for q, r in (info.get("wrong") or [])],
            "result": _brief((u.get("info") or {}).get("result") or {})}


def _version_row(v: int, m, u: dict, g: dict, aliases: dict, titles: dict) -> dict:
    note = m.note if m else ""
    status = u.get("status")
    kind = ("fold" if note.startswith("fold") else "merge" if note.startswith("merge") else
            "remove" if status == "removed" or note.startswith("remove") else
            "learn" if note.startswith("learn") else "other")
    d = u.get("doc_id")
    return {"version": v, "name": f"student-v{v}", "parent": m.parent if m else u.get("parent"),
            "created_at": m.created if m else None, "note": note, "kind": kind, "status": status,
            "reason": u.get("reason"), "gain": u.get("gain"), "forgetting": u.get("forgetting"),
            "document": {"id": d, "title": titles.get(d, d)} if d else None,
            "aliases": sorted(a for a, x in aliases.items() if x == v),
            "documents": len(m.doc_ids) if m else None, "adapters": len(m.adapters) if m else None,
            "merged": sum(a.merged for a in m.adapters) if m else None,
            "canary": g.get("canary"), "drift": g.get("drift"), "missing": m is None}


def _stage_seconds(events: list[tuple[float, str]], state: str, now: float) -> dict[str, float]:
    """Seconds spent in each state, from consecutive events (a restart's event keeps its stage); an unfinished
    job's current stage counts up to `now`."""
    out: dict[str, float] = {}
    for (at, st), (nxt, _) in zip(events, [*events[1:], (now, None)] if state not in TERMINAL else events[1:]):
        if st in STAGES:
            out[st] = out.get(st, 0.0) + max(0.0, nxt - at)
    return {k: round(v, 2) for k, v in out.items()}


_BRIEF = ("version", "name", "status", "reason", "before", "after", "gain", "forgetting", "canary", "canary_base",
          "canary_drop", "drift", "seconds", "replayed", "probes", "replayed_docs", "consolidated_to")


def _brief(res: dict) -> dict:
    """A job's or update's result without the bulky parts (candidate lists, teacher details)."""
    out = {k: res[k] for k in _BRIEF if k in res}
    if res.get("attempts"):
        out["attempts"] = [{k: a.get(k) for k in ("version", "reason", "canary", "drift", "after")}
                           for a in res["attempts"]]
    return out


__all__ = ["Audit", "STAGES"]
