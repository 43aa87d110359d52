"""Result files are appended by several processes at once (shards of one ARC evaluation) and by writers that
may be killed mid-line; every complete record must survive as one parseable line."""
import json
import multiprocessing as mp

from core.io import append_jsonl, read_jsonl


def _writer(path, who, n):
    for i in range(n):
        append_jsonl(path, {"who": who, "i": i, "pad": "x" * 20000})  # larger than one write buffer


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "rows.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_text().splitlines()
    assert len(lines) == 75
    rows = [json.loads(x) for x in lines]  # raises if two writes interleaved
    assert sorted((r["who"], r["i"]) for r in rows) == [(w, i) for w in range(3) for i in range(25)]


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_on_its_own_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_jsonl(path, {"i": 0})
    with open(path, "a") as f:
        f.write('{"i": 1, "half')  # a writer killed mid-line
    append_jsonl(path, {"i": 2})
    assert [r["i"] for r in read_jsonl(path)] == [0, 2]
