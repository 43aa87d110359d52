"""The audit page (issue 16), default tier: /ui is served without a key in any URL, its files load, the JSON
routes it reads take the API's keys, their figures agree with the forgetting report, and the page's writes
go through the API's own routes (no write route under /v1/ui). The browser itself is driven in
tests/test_ui_browser.py (slow tier)."""
import re

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT

READ, WRITE = "ui-read-key-0001", "ui-write-key-0001"
R = {"Authorization": f"Bearer {READ}"}
W = {"Authorization": f"Bearer {WRITE}"}
STATIC = ROOT / "api/ui_static"
# every JSON route the page reads (app.js), with the arguments it sends
PAGE_ROUTES = ["/v1/ui/whoami", "/v1/ui/overview", "/v1/ui/matrix?view=promoted&limit=25&doc_limit=30&tail=true",
               "/v1/ui/matrix?view=all&limit=25&offset=0&doc_limit=30&doc_offset=0", "/v1/ui/curves",
               "/v1/ui/jobs?limit=50&offset=0", "/v1/ui/jobs?state=rejected&limit=50&offset=0",
               "/v1/ui/versions?limit=50&offset=0", "/v1/ui/versions?status=promoted&limit=50&offset=0",
               "/v1/ui/documents?limit=50&offset=0", "/v1/ui/documents?q=of&limit=50&offset=0"]


def _open(tiny_cfg, state_dir):
    from agent.service import Agent
    from api.app import create_app

    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "state_dir": str(state_dir)},
        service={"api_keys": {READ: "read", WRITE: "write"}}, runtime={"threads": 1})
    agent = Agent.open(cfg, start=False)  # read-only tests: no worker thread
    return agent, TestClient(create_app(agent, dict(cfg.service.api_keys)))


@pytest.fixture(scope="module")
def synthetic(tiny_cfg, tmp_path_factory):
    """12 documents, 30 versions (promoted, refused tries, folds) written through the agent's stores."""
    from bench.ui_state import build

    root = tmp_path_factory.mktemp("ui-state")
    build(root, n_docs=12, n_versions=30, seed=1)
    agent, client = _open(tiny_cfg, root)
    with client:
        yield agent, client
    agent.close()


@pytest.fixture(scope="module")
def empty(tiny_cfg, tmp_path_factory):
    agent, client = _open(tiny_cfg, tmp_path_factory.mktemp("ui-empty"))
    with client:
        yield agent, client
    agent.close()


def test_the_page_is_served_without_a_key_and_its_files_load(synthetic):
    _, c = synthetic
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    r = c.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    html = r.text
    assert '<label for="key">' in html and 'type="password"' in html  # asks for the key in a labelled field
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html)
    assert {"/ui/static/app.js", "/ui/static/ui.css", "/ui/static/vendor/uPlot.iife.min.js",
            "/ui/static/vendor/uPlot.min.css"} <= set(assets)
    types = {"js": "javascript", "css": "text/css"}
    for a in assets:
        got = c.get(a)
        assert got.status_code == 200 and types[a.rsplit(".", 1)[1]] in got.headers["content-type"], a
    assert c.get("/ui/static/../app.py").status_code == 404
    js = (STATIC / "app.js").read_text()
    # the key lives in sessionStorage and travels as a header, never in a URL or in localStorage
    assert "sessionStorage.setItem(KEY" in js and '"Bearer " + state.key' in js and "localStorage" not in js
    assert not re.search(r"[?&](api_)?key=", js + html)
    assert "innerHTML" not in js  # data is written with textContent only


@pytest.mark.parametrize("path", PAGE_ROUTES)
def test_the_routes_the_page_reads_take_the_api_keys(synthetic, path):
    _, c = synthetic
    assert c.get(path).status_code == 401
    assert c.get(path, headers={"Authorization": "Bearer not-a-key-at-all"}).status_code == 401
    r = c.get(path, headers=R)
    assert r.status_code == 200, r.text
    assert c.get(path, headers=W).status_code == 200
    if path.endswith("whoami"):
        assert r.json() == {"scope": "read"} and c.get(path, headers=W).json() == {"scope": "write"}


def test_the_page_adds_no_write_route_and_calls_only_the_apis_own(synthetic):
    _, c = synthetic
    paths = c.app.openapi()["paths"]
    assert all(set(ops) == {"get"} for p, ops in paths.items() if p.startswith("/v1/ui/"))
    writes = {p for p, ops in paths.items() if set(ops) - {"get", "head"}}
    for p in ("/ui", "/ui/", "/ui/static/app.js"):
        assert c.post(p, headers=W).status_code == 405, p
    assert writes == {"/v1/documents", "/v1/jobs/{job_id}/cancel", "/v1/adapters/{version}/promote",
                      "/v1/adapters/rollback", "/v1/documents/{doc_id}/remove", "/v1/chat/completions",
                      "/v1/completions"}
    js = (STATIC / "app.js").read_text()
    called = set(re.findall(r'await write\(`?"?([^`",]+)', js))
    assert called == {"/v1/adapters/${encodeURIComponent(v.name)}/promote", "/v1/adapters/rollback",
                      "/v1/jobs/${encodeURIComponent(j.id)}/cancel", "/v1/documents/${encodeURIComponent(d.id)}/remove"}
    # each write is behind a confirmation: every function that calls write() asks first
    for fn in re.findall(r"async function (\w+)\([^)]*\) \{\n((?:(?!\n  \}\n).)*)", js, re.S):
        if "await write(" in fn[1]:
            assert "await confirmAction(" in fn[1].split("await write(")[0], fn[0]
    assert js.count('method: "POST"') == 1  # one place sends writes: write(), behind confirmAction()


def _close(a, b):
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)


def test_matrix_windows_agree_with_the_forgetting_report(synthetic):
    agent, c = synthetic
    rep = c.get("/v1/forgetting", headers=R).json()
    m = c.get("/v1/ui/matrix?view=promoted&limit=5&doc_limit=4&tail=true", headers=R).json()
    assert m["total_versions"] == len(rep["versions"]) and m["total_documents"] == len(rep["docs"])
    assert m["offset"] == len(rep["versions"]) - 5 and m["doc_offset"] == len(rep["docs"]) - 4
    assert [r["version"] for r in m["rows"]] == rep["versions"][-5:]
    assert [d["id"] for d in m["documents"]] == rep["docs"][-4:]
    titles = {d: agent.memory.document(d).title for d in rep["docs"]}
    assert [d["title"] for d in m["documents"]] == [titles[d] for d in rep["docs"][-4:]]
    assert all(len(d["probes"]) == 3 and d["probes"][0]["question"] for d in m["documents"])
    for row, full in zip(m["rows"], rep["matrix"][-5:]):
        assert all(_close(cell and cell["value"], v) for cell, v in zip(row["cells"], full[-4:])), row
    # every window of the matrix, walked page by page, is the whole report
    seen = {}
    for off in range(0, len(rep["versions"]), 4):
        for doff in range(0, len(rep["docs"]), 5):
            w = c.get(f"/v1/ui/matrix?limit=4&offset={off}&doc_limit=5&doc_offset={doff}", headers=R).json()
            for row in w["rows"]:
                for d, cell in zip(w["documents"], row["cells"]):
                    seen[(row["version"], d["id"])] = cell and cell["value"]
    for i, v in enumerate(rep["versions"]):
        for j, d in enumerate(rep["docs"]):
            assert _close(seen[(v, d)], rep["matrix"][i][j]), (v, d)
    # the toggle adds the refused candidates, with the gate's reason
    a = c.get("/v1/ui/matrix?view=all&limit=200&doc_limit=200", headers=R).json()
    rejected = [r for r in a["rows"] if r["status"] == "rejected"]
    assert rejected and all("canary drop" in r["reason"] for r in rejected)
    assert a["total_versions"] > m["total_versions"] and a["total_documents"] >= m["total_documents"]
    assert m["answers_recorded"] is False  # synthetic rows hold figures only: no replies to show
    for bad in ("view=bogus", "limit=0", "limit=1000", "offset=-1", "doc_limit=0"):
        assert c.get(f"/v1/ui/matrix?{bad}", headers=R).status_code == 422, bad


def test_curves_agree_with_the_forgetting_report(synthetic):
    _, c = synthetic
    rep = c.get("/v1/forgetting", headers=R).json()
    cur = c.get("/v1/ui/curves", headers=R).json()
    assert cur["versions"] == rep["versions"]
    for k in ("avg_accuracy", "bwt", "canary", "drift"):
        assert all(_close(a, b) for a, b in zip(cur[k], rep[k])), k
    assert {int(k): v for k, v in rep["retention_by_age"].items()}.keys() == {int(k) for k in cur["retention_by_age"]}
    assert all(_close(cur["retention_by_age"][k], v) for k, v in rep["retention_by_age"].items())
    assert _close(cur["base_avg"], rep["base_avg"]) and _close(cur["canary_base"], rep["canary_base"])


def test_curves_agree_on_postgresql(postgres_url, tmp_path):
    """The curves are SQL aggregates: the same figures on the other database the agent supports."""
    from agent.audit import Audit
    from agent.continual import forgetting_report
    from memory.jobs import JobStore
    from bench.ui_state import build
    from memory.store import MemoryStore
    from student.stack import StackStore

    build(tmp_path, n_docs=10, n_versions=25, seed=2, database=postgres_url)
    memory, jobs = MemoryStore(postgres_url), JobStore(postgres_url)
    try:
        audit = Audit(memory, jobs, StackStore(tmp_path / "stack"))
        rep, cur = forgetting_report(memory).to_json(), audit.curves()
        assert cur["versions"] == rep["versions"] and len(cur["versions"]) > 5
        for k in ("avg_accuracy", "bwt", "canary", "drift"):
            assert all(_close(a, b) for a, b in zip(cur[k], rep[k])), k
        assert all(_close(cur["retention_by_age"][k], v) for k, v in rep["retention_by_age"].items())
        assert audit.jobs_page("rejected")["total"] == jobs.counts()["rejected"]
        assert audit.matrix("all", tail=True)["rows"]
    finally:
        memory.close()
        jobs.close()


def test_jobs_versions_and_documents_pages(synthetic):
    agent, c = synthetic
    counts = agent.jobs.counts()
    j = c.get("/v1/ui/jobs?state=rejected&limit=50", headers=R).json()
    assert j["total"] == counts["rejected"] > 0 and {x["state"] for x in j["jobs"]} == {"rejected"}
    job = j["jobs"][0]
    assert job["result"]["reason"].startswith("not learnable within the budget")
    assert set(job["stages"]) == {"queued", "writing_probes", "self_editing", "training", "evaluating"}
    assert all(s >= 0 for s in job["stages"].values())
    page1 = c.get("/v1/ui/jobs?limit=5", headers=R).json()
    page2 = c.get("/v1/ui/jobs?limit=5&offset=5", headers=R).json()
    assert page1["total"] == sum(counts.values()) and not {x["id"] for x in page1["jobs"]} & {x["id"] for x in page2["jobs"]}
    assert c.get("/v1/ui/jobs?state=bogus", headers=R).status_code == 422
    v = c.get("/v1/ui/versions?limit=10", headers=R).json()
    assert v["total"] == len(agent.stack.versions()) and [x["version"] for x in v["versions"]] == \
           sorted(agent.stack.versions(), reverse=True)[:10]
    kinds = {x["kind"] for x in c.get("/v1/ui/versions?limit=500", headers=R).json()["versions"]}
    assert {"learn", "fold"} <= kinds  # lineage: what made each version
    prom = c.get("/v1/ui/versions?status=promoted&limit=500", headers=R).json()
    assert prom["versions"] and all(x["status"] == "promoted" for x in prom["versions"])
    one = c.get(f"/v1/ui/versions/{prom['versions'][0]['version']}", headers=R).json()
    assert one["adapters"] and one["documents"] == sum(len(a["documents"]) for a in one["adapters"])
    assert c.get("/v1/ui/versions/9999", headers=R).status_code == 404
    learned = agent.memory.learned_at()
    d = c.get("/v1/ui/documents?limit=100", headers=R).json()
    assert d["total"] == 12 and all(x["learned_in"] == learned.get(x["id"]) for x in d["documents"])
    assert all(x["in_prod"] == (x["id"] in learned) for x in d["documents"])
    hit = d["documents"][0]
    s = c.get("/v1/ui/documents", params={"q": hit["title"][:8].upper()}, headers=R).json()
    assert hit["id"] in [x["id"] for x in s["documents"]]  # case-insensitive title search
    one = c.get(f"/v1/ui/documents/{hit['id']}", headers=R).json()
    assert one["probes"] and one["accuracy"][0]["status"] == "base" and one["jobs"]
    assert c.get("/v1/ui/documents/ffff", headers=R).status_code == 404


def test_an_empty_state_reads_cleanly(empty):
    _, c = empty
    o = c.get("/v1/ui/overview", headers=R).json()
    assert o["documents"] == 0 and o["versions"] == 0 and o["aliases"] == {} and o["poll_seconds"] > 0
    assert c.get("/v1/ui/matrix?tail=true", headers=R).json()["rows"] == []
    assert c.get("/v1/ui/curves", headers=R).json()["versions"] == []
    for p in ("jobs", "versions", "documents"):
        assert c.get(f"/v1/ui/{p}", headers=R).json()["total"] == 0
    assert "Nothing learned yet" in c.get("/ui/").text  # the page says how to add a document


def test_a_cells_detail_without_kept_replies(synthetic):
    """A cell measured before replies were kept: the questions and references, no replies, and the page says
    so; the route takes the read key like the others. (A learned cell's replies: tests/test_api.py.)"""
    agent, c = synthetic
    m = c.get("/v1/ui/matrix?view=promoted&limit=3&doc_limit=3&tail=true", headers=R).json()
    row, doc = m["rows"][-1], m["documents"][-1]
    path = f"/v1/ui/cells/{row['version']}/{doc['id']}"
    assert c.get(path).status_code == 401
    cell = c.get(path, headers=R).json()
    assert cell["answers_recorded"] is False and cell["title"] == doc["title"]
    pairs = [(p["question"], p["answer"]) for p in cell["probes"]]
    assert pairs == [(p["question"], p["answer"]) for p in doc["probes"]]
    assert all(p["reply"] is None and p["correct"] is None for p in cell["probes"])
    assert _close(cell["value"], row["cells"][-1] and row["cells"][-1]["value"])
    assert cell["status"] == row["status"]
    base = c.get(f"/v1/ui/cells/0/{doc['id']}", headers=W).json()
    assert base["name"] == "untouched model" and base["status"] == "base"
    never = c.get(f"/v1/ui/cells/99999/{doc['id']}", headers=R).json()
    assert never["value"] is None and never["total"] is None and not never["answers_recorded"]
    assert c.get("/v1/ui/cells/1/ffff", headers=R).status_code == 404
    assert c.get(f"/v1/ui/cells/-1/{doc['id']}", headers=R).status_code == 422
    js = (STATIC / "app.js").read_text()
    assert "/v1/ui/cells/${row.version}/${encodeURIComponent(doc.id)}" in js  # what the hover reads
