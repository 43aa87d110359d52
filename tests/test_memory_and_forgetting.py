import pytest

from evaluation.forgetting import compute, plot
from core.documents import QA, passage_from_dict
from memory.store import MemoryStore


def test_metrics_on_a_hand_made_matrix():
    # doc a learned at v1, b at v2, c at v3
    ledger = {
        1: {"a": 0.8},
        2: {"a": 0.6, "b": 1.0},
        3: {"a": 0.4, "b": 0.5, "c": 0.9},
    }
    r = compute(ledger, {"a": 1, "b": 2, "c": 3}, base={"a": 0.2, "b": 0.0, "c": 0.1})
    assert r.docs == ["a", "b", "c"]
    assert r.matrix == [[0.8, None, None], [0.6, 1.0, None], [0.4, 0.5, 0.9]]
    assert r.avg_accuracy == pytest.approx([0.8, 0.8, 0.6])
    assert r.bwt[0] is None
    assert r.bwt[1] == pytest.approx(-0.2)
    assert r.bwt[2] == pytest.approx(((0.4 - 0.8) + (0.5 - 1.0)) / 2)
    assert r.forgetting == pytest.approx({"a": 0.4, "b": 0.5})  # c was learned by the last version
    assert r.retention_by_age == pytest.approx({0: 0.9, 1: 0.55, 2: 0.4})
    assert r.to_json()["base_avg"] == pytest.approx(0.1)


def test_plots_are_written(tmp_path):
    r = compute({1: {"a": 1.0}, 2: {"a": 0.5, "b": 1.0}}, {"a": 1, "b": 2})
    paths = plot(r, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request, tmp_path):
    if request.param == "sqlite":
        return tmp_path / "m.sqlite"
    return request.getfixturevalue("postgres_url")


def test_memory_store_documents_probes_ledger(db_target):
    s = MemoryStore(db_target)
    p = passage_from_dict({"title": "T", "context": "Ctx.", "questions": [{"question": "q?", "answer": "a"}]})
    s.add_document(p)
    s.add_document(p)  # idempotent
    assert [x.question for x in s.probes(p.doc_id)] == ["q?"]
    q = passage_from_dict({"title": "U", "context": "No QA here."})
    s.add_document(q, probes=[QA("written?", "yes")], source="teacher")
    assert s.probes(q.doc_id)[0].source == "teacher"
    s.mark_learned(p.doc_id, 1)
    s.mark_learned(q.doc_id, 2)
    s.record(1, p.doc_id, 1, 1)
    s.record(2, p.doc_id, 0, 1)
    s.record(2, q.doc_id, 1, 1)
    s.close()
    s.record(2, q.doc_id, 1, 1)  # re-recording replaces the cell (upsert)
    s.put_sequences(p.doc_id, ["a", "b"])
    s.put_sequences(p.doc_id, ["c"])
    s.put_embedding(p.doc_id, [1.0, 2.0])
    s.put_embedding(p.doc_id, [3.0, 4.0])
    s.record_update(1, p.doc_id, None, "promoted", gain=0.5, info={"k": 1})
    s.record_update(1, p.doc_id, None, "promoted", gain=0.25, info={"k": 2})
    s.close()
    s2 = MemoryStore(db_target)  # persisted
    assert s2.learned_at() == {p.doc_id: 1, q.doc_id: 2}
    assert s2.ledger() == {1: {p.doc_id: 1.0}, 2: {p.doc_id: 0.0, q.doc_id: 1.0}}
    assert s2.document(q.doc_id).questions == (QA("written?", "yes"),)
    assert s2.sequences(p.doc_id) == ["c"]
    ids, vecs = s2.embeddings()
    assert ids == [p.doc_id] and vecs.tolist() == [[3.0, 4.0]]
    [u] = s2.updates()
    assert (u["gain"], u["info"]) == (0.25, {"k": 2})
    with pytest.raises(KeyError):
        s2.document("nope")


def test_the_ledger_keeps_a_versions_replies_and_old_databases_stay_readable(db_target):
    """record(..., answers=) keeps the version's replies beside the cell; a database made before replies were
    kept (no ledger_answers table) opens, reads its old cells (no replies) and takes new ones."""
    from sqlalchemy import text

    s = MemoryStore(db_target)
    p = passage_from_dict({"title": "T", "context": "Ctx.", "questions": [{"question": "q?", "answer": "a"}]})
    s.add_document(p)
    s.record(1, p.doc_id, 1, 1)  # as older code wrote it
    with s.engine.begin() as c:  # the schema before this table existed (and before versions were recorded)
        c.execute(text("DROP TABLE ledger_answers"))
        c.execute(text("DROP TABLE schema_version"))
    s.close()
    s = MemoryStore(db_target)  # opening adds the table; the old cell reads as before, without replies
    assert s.ledger() == {1: {p.doc_id: 1.0}} and s.answers(1, p.doc_id) is None
    s.record(2, p.doc_id, 0, 1, answers=[{"question": "q?", "reply": "b" * 1000, "correct": False}])
    s.record(0, p.doc_id, 1, 1, answers=[{"question": "q?", "reply": "it is a", "correct": True}])
    [got] = s.answers(2, p.doc_id)
    assert got["question"] == "q?" and got["correct"] is False and len(got["reply"]) == 400  # kept bounded
    assert s.answers(0, p.doc_id) == [{"question": "q?", "reply": "it is a", "correct": True}]
    s.record(2, p.doc_id, 1, 1, answers=[{"question": "q?", "reply": "a", "correct": True}])  # upsert
    assert s.answers(2, p.doc_id)[0]["reply"] == "a" and s.ledger()[2] == {p.doc_id: 1.0}
    s.record(2, p.doc_id, 0, 1)  # re-measured without replies: the old replies do not outlive their figure
    assert s.answers(2, p.doc_id) is None and s.ledger()[2] == {p.doc_id: 0.0}
    s.close()


def test_duplicate_deliveries_racing_on_probes_and_samples_do_not_fail(db_target):
    """Count-then-insert raced: two deliveries of one job both saw no rows and the second hit a primary-key error
    (the job then ended failed). Now both succeed and one set of rows is kept."""
    import threading

    from core.documents import QA, passage_from_dict
    from memory.store import MemoryStore

    doc = passage_from_dict({"title": "Race", "context": "Two workers got the same job."})
    stores = [MemoryStore(db_target) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors = []

    def deliver(i, m):
        try:
            barrier.wait()
            m.add_document(doc, [QA(f"q{i}-{k}?", "a") for k in range(3)], source="teacher")
            m.put_samples(doc.doc_id, 0, [f"raw {i} {k}" for k in range(2)])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=deliver, args=(i, m)) for i, m in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    m = stores[0]
    assert len(m.probes(doc.doc_id)) == 3 and len(m.samples(doc.doc_id)) == 2


def test_reads_do_not_queue_behind_a_write(tmp_path):
    """SQLite: a transaction that writes holds the write lock; reads (documents, jobs) must still answer while it
    is held, instead of waiting for the writer (the API and the audit page read while workers write)."""
    import threading

    from core.documents import passage_from_dict
    from memory.jobs import JobStore
    from memory.store import MemoryStore

    path = tmp_path / "mem.sqlite"
    store, jobs = MemoryStore(path), JobStore(path)
    p = passage_from_dict({"title": "T", "context": "Some text here."})
    store.add_document(p)
    holding, release, read_done = threading.Event(), threading.Event(), []

    def writer():
        with store.engine.begin() as c:  # BEGIN IMMEDIATE: the write lock
            c.exec_driver_sql("UPDATE documents SET title = title")
            holding.set()
            release.wait(20)
            read_done.append(("writer released", bool(read_done)))

    t = threading.Thread(target=writer)
    t.start()
    assert holding.wait(10)
    try:
        assert store.has_document(p.doc_id) and store.document(p.doc_id).title == "T"
        assert jobs.counts()["queued"] == 0 and jobs.list() == []
        read_done.append("reads answered")
    finally:
        release.set()
        t.join()
    assert read_done[0] == "reads answered"  # while the write lock was held
