"""The HTTP API over a real embedded agent (tiny model, in-process worker thread, SQLite, local folders)."""
import json

import pytest
from fastapi.testclient import TestClient

READ, WRITE = "read-key-0001", "write-key-0001"
R = {"Authorization": f"Bearer {READ}"}
W = {"Authorization": f"Bearer {WRITE}"}
DOCS = [
    {"title": "Zorblax", "context": "The Zorblax river flows into the Quimby sea near Frell.",
     "questions": [{"question": "Where does the Zorblax flow?", "answer": "Quimby sea"}]},
    {"title": "Harbour", "context": "Anna Berg painted the northern harbour in winter.",
     "questions": [{"question": "Who painted the harbour?", "answer": "Anna Berg"}]},
]


@pytest.fixture(scope="module")
def served(tiny_cfg, tmp_path_factory):
    from agent.service import Agent
    from api.app import create_app

    root = tmp_path_factory.mktemp("agent")
    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(root / "state")},
        service={"api_keys": {READ: "read", WRITE: "write"}, "max_request_bytes": 4096,
                 "max_documents_per_request": 4},
        runtime={"threads": 1})
    agent = Agent.open(cfg)
    with TestClient(create_app(agent, dict(cfg.service.api_keys))) as client:
        yield agent, client
    agent.close()


def _wait(agent):
    agent.transport.join(timeout=300)


@pytest.fixture(scope="module")
def learned(served):
    """The served agent after it learned DOCS: tests that query versions must not depend on another test having
    submitted them first (each passes alone with -k)."""
    agent, c = served
    if len(agent.stack.versions()) < 2:
        r = c.post("/v1/documents", json={"documents": DOCS}, headers=W)
        assert r.status_code == 202, r.text
        _wait(agent)
    assert len(agent.stack.versions()) >= 2
    return served


def test_auth_scopes_and_the_open_health_check(served):
    _, c = served
    assert c.get("/healthz").json()["status"] == "ok"
    r = c.get("/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/v1/models", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    assert c.get("/metrics").status_code == 401
    r = c.post("/v1/documents", json=DOCS[0], headers=R)
    assert r.status_code == 403 and "write" in r.json()["detail"]
    assert c.get("/v1/models", headers=W).status_code == 200  # write implies read


def test_bad_input_is_a_clear_4xx_and_changes_nothing(served):
    agent, c = served
    before = agent.jobs.counts()
    r = c.post("/v1/documents", json={"title": "x", "context": "   "}, headers=W)
    assert r.status_code == 422 and "context" in r.json()["detail"]
    r = c.post("/v1/documents", json={"documents": [], "title": "x"}, headers=W)
    assert r.status_code == 422
    r = c.post("/v1/documents", json={"documents": [DOCS[0]] * 5}, headers=W)
    assert r.status_code == 413 and "at most 4" in r.json()["detail"]
    r = c.post("/v1/documents", content=json.dumps({"context": "x" * 5000}), headers=W | {"content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/v1/chat/completions", json={"model": "seal-student@prod", "messages": []}, headers=R)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("invalid request")
    r = c.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": "hi"}],
                                             "max_tokens": 100000}, headers=R)
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    assert agent.jobs.counts() == before


def test_documents_become_jobs_that_promote_versions(served):
    agent, c = served
    r = c.post("/v1/documents", json={"documents": DOCS}, headers=W)
    assert r.status_code == 202
    jobs = r.json()["jobs"]
    assert [j["state"] for j in jobs] == ["queued", "queued"] and all(j["created"] for j in jobs)
    _wait(agent)
    for j in jobs:
        got = c.get(f"/v1/jobs/{j['id']}", headers=R).json()
        assert got["state"] == "promoted", got
        states = [e["state"] for e in got["events"]]
        assert states[0] == "queued" and states[-1] == "promoted"
        assert [s for s in ("writing_probes", "self_editing", "training", "evaluating") if s in states] == \
               ["writing_probes", "self_editing", "training", "evaluating"]
        assert got["result"]["name"].startswith("student-v") and "train" in got["result"]["seconds"]
    doc = c.get(f"/v1/documents/{jobs[0]['doc_id']}", headers=R).json()
    assert doc["in_prod"] and doc["probes"][0]["source"] == "given" and "base" in doc["accuracy"]
    assert c.get("/v1/documents/ffff", headers=R).status_code == 404
    # an idempotency key returns the same job instead of a second one
    k = {"Idempotency-Key": "client-key-1"}
    a = c.post("/v1/documents", json=DOCS[0], headers=W | k).json()["jobs"][0]
    b = c.post("/v1/documents", json=DOCS[0], headers=W | k).json()["jobs"][0]
    assert a["id"] == b["id"] and a["created"] and not b["created"]
    r = c.post("/v1/documents", json=DOCS[1], headers=W | k)  # the same key with another document
    assert r.status_code == 409 and "another document" in r.json()["detail"]
    r = c.post("/v1/documents", json=DOCS[0], headers=W | {"Idempotency-Key": "k:0/2"})
    assert r.status_code == 422 and "batch" in r.json()["detail"]
    _wait(agent)
    again = c.get(f"/v1/jobs/{a['id']}", headers=R).json()
    assert again["state"] == "duplicate" and again["result"]["replayed"]
    first = c.get(f"/v1/jobs/{jobs[0]['id']}", headers=R).json()["result"]
    learned_in = c.get(f"/v1/documents/{jobs[0]['doc_id']}", headers=R).json()["learned_in"]
    assert again["result"]["reason"] == f"already learned in student-v{learned_in}"
    assert learned_in == first["version"]  # the version its own job promoted, not one read off this result
    assert len(agent.stack.versions()) == 2  # a document already in prod is not learned twice
    r = c.post(f"/v1/jobs/{a['id']}/cancel", headers=W)
    assert r.status_code == 409
    assert c.post("/v1/jobs/job_nope/cancel", headers=W).status_code == 404


def test_openai_compatible_queries_and_streaming(learned):
    agent, c = learned
    ids = [m["id"] for m in c.get("/v1/models", headers=R).json()["data"]]
    assert {"base", "seal-student@prod", "seal-student-v1", "seal-student-v2"} <= set(ids)
    body = {"model": "seal-student@prod", "messages": [{"role": "user", "content": "Who painted the harbour?"}],
            "max_tokens": 8}
    r = c.post("/v1/chat/completions", json=body, headers=R)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["system_fingerprint"] == "student-v2"
    text = out["choices"][0]["message"]["content"]
    assert 0 < out["usage"]["completion_tokens"] <= 8
    with c.stream("POST", "/v1/chat/completions", json=body | {"stream": True}, headers=R) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    streamed = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
    assert streamed.strip() == text.strip()  # greedy: the stream says what the plain call said
    assert chunks[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]  # the real reason
    assert chunks[-1]["system_fingerprint"] == "student-v2"  # the stream names the version that answered
    r = c.post("/v1/completions", json={"model": "seal-student-v1", "prompt": "The Zorblax river", "max_tokens": 4},
               headers=R)
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    r = c.post("/v1/chat/completions", json=body | {"model": "seal-student-v99"}, headers=R)
    assert r.status_code == 404 and "student-v99" in r.json()["error"]["message"]
    window = agent.server.student.base.config.max_position_embeddings  # a prompt that cannot fit: 400, both numbers
    long = body | {"messages": [{"role": "user", "content": "x " * (window // 2)}]}  # ~1 token a character here
    r = c.post("/v1/chat/completions", json=long, headers=R)
    assert r.status_code == 400 and f"window of {window}" in r.json()["error"]["message"], r.text
    base = c.post("/v1/chat/completions", json=body | {"model": "base"}, headers=R).json()
    assert base["system_fingerprint"] == "base"


def test_versions_promote_rollback_forgetting_and_metrics(learned):
    agent, c = learned
    v = c.get("/v1/adapters", headers=R).json()
    assert v["aliases"]["prod"] == 2 and [x["version"] for x in v["versions"]] == [1, 2]
    r = c.post("/v1/adapters/rollback", headers=W)
    assert r.status_code == 200 and r.json()["version"] == 1 and agent.stack.aliases()["prod"] == 1
    r = c.post("/v1/adapters/student-v2/promote", json={"alias": "prod"}, headers=W)
    assert r.status_code == 200 and agent.stack.aliases()["prod"] == 2
    assert c.post("/v1/adapters/student-v9/promote", headers=W).status_code == 404
    f = c.get("/v1/forgetting", headers=R).json()
    assert f["versions"] == [1, 2] and len(f["matrix"]) == 2 and f["base_avg"] is not None
    # general ability is part of the audit: the untouched model's canary and one canary/drift per version
    assert f["canary_base"] is not None and len(f["canary"]) == 2 and all(x is not None for x in f["drift"])
    jobs = c.get("/v1/jobs", headers=R).json()
    done = [j for j in (jobs["jobs"] if isinstance(jobs, dict) else jobs) if j["state"] == "promoted"]
    assert done and all(j["result"]["drift"] is not None and j["result"]["canary_base"] is not None for j in done)
    png = c.get("/v1/forgetting/plot.png", headers=R)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert c.get("/v1/models").status_code == 401  # counted below
    m = c.get("/metrics", headers=R).text
    promoted = agent.jobs.counts()["promoted"]  # 2, or 3 after the replayed job of the documents test
    assert promoted >= 2 and f'seal_jobs{{state="promoted"}} {float(promoted)}' in m and "seal_prod_version 2.0" in m
    assert "seal_job_stage_seconds_count" in m and "seal_generated_tokens_total" in m
    assert 'seal_http_requests_total{code="401"' in m
    assert 'seal_canary_accuracy{version="base"}' in m and 'seal_drift_kl{version="prod"}' in m


def test_the_official_openai_client_works_against_the_api(learned):
    from openai import NotFoundError, OpenAI

    _, c = learned
    client = OpenAI(base_url=f"{c.base_url}/v1", api_key=READ, http_client=c, max_retries=0)
    assert "seal-student@prod" in [m.id for m in client.models.list()]
    msgs = [{"role": "user", "content": "Where does the Zorblax flow?"}]
    out = client.chat.completions.create(model="seal-student@prod", messages=msgs, max_tokens=6, temperature=0)
    assert out.choices[0].message.role == "assistant" and out.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="seal-student@prod", messages=msgs, max_tokens=6, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream)
    assert text.strip() == out.choices[0].message.content.strip()
    comp = client.completions.create(model="base", prompt="The Zorblax", max_tokens=3)
    assert comp.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="seal-student-v404", messages=msgs)


def _state(agent):
    """Everything a request could change: job rows, events, documents, versions, aliases, files."""
    root = agent.stack.root
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.startswith(".update.lock"))
    with agent.jobs.engine.begin() as conn:
        ev = conn.exec_driver_sql("SELECT COUNT(*) FROM job_events").scalar()
    return (agent.jobs.counts(), ev, len(agent.memory.learned_at()), agent.stack.aliases(), files)


@pytest.mark.parametrize("method,path,kwargs,code", [
    ("post", "/v1/documents", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
    ("post", "/v1/documents", {"content": b"x" * 10_000, "headers": {"content-type": "application/json"}}, 413),
    ("post", "/v1/documents", {"json": {"title": "t", "context": ""}}, 422),
    ("post", "/v1/documents", {"json": {}}, 422),
    ("post", "/v1/documents", {"json": {"documents": [{"title": "t"}]}}, 422),
    ("post", "/v1/documents", {"json": {"context": "ok", "questions": [{"question": "q"}]}}, 422),
    ("post", "/v1/documents", {"json": {"context": "ok", "surprise": 1}}, 422),
    ("post", "/v1/documents", {"json": [1, 2]}, 422),
    ("post", "/v1/chat/completions", {"json": {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}}, 404),
    ("post", "/v1/chat/completions", {"json": {"model": "seal-student@../../etc",
                                               "messages": [{"role": "user", "content": "x"}]}}, 404),
    ("post", "/v1/chat/completions", {"json": {"model": "base", "messages": [{"role": "tool", "content": "x"}]}}, 422),
    ("post", "/v1/chat/completions", {"json": {"model": "base", "n": 3, "messages": [{"role": "user", "content": "x"}]}}, 422),
    ("post", "/v1/completions", {"json": {"model": "base", "prompt": ["a", "b"]}}, 422),
    ("post", "/v1/adapters/..%2F..%2Fetc%2Fpasswd/promote", {}, 404),
    ("post", "/v1/adapters/..%2Faliases/promote", {}, 404),
    ("post", "/v1/adapters/student-v1/promote", {"json": {"alias": "../../prod"}}, 422),
    ("post", "/v1/adapters/student-v1/promote", {"json": {"alias": "student-v9"}}, 404),
    ("post", "/v1/adapters/rollback", {"json": {"to": "../../x"}}, 404),
    ("get", "/v1/documents/..%2F..%2Fetc%2Fpasswd", {}, 404),
    ("get", "/v1/jobs/..%2F..%2Fx", {}, 404),
    ("post", "/v1/jobs/..%2Fx/cancel", {}, 404),
    ("get", "/v1/jobs?limit=0", {}, 422),
    ("post", "/v1/documents/ffff/remove", {}, 404),
    ("post", "/v1/documents/..%2F..%2Fetc%2Fpasswd/remove", {}, 404),
    ("get", "/v1/ui/cells/1/ffff", {}, 404),
    ("get", "/v1/ui/cells/-1/ffff", {}, 422),
])
def test_bad_input_suite_changes_nothing(learned, method, path, kwargs, code):
    agent, c = learned
    before = _state(agent)
    kwargs = dict(kwargs)
    kwargs["headers"] = W | kwargs.get("headers", {})
    r = getattr(c, method)(path, **kwargs)
    assert r.status_code == code, r.text
    assert r.json()["detail"]  # a reason, not just a code
    assert _state(agent) == before


@pytest.mark.parametrize("headers,code", [
    ({}, 401), ({"Authorization": "Bearer"}, 401), ({"Authorization": "Basic abc"}, 401),
    ({"Authorization": "Bearer not-a-key-at-all"}, 401), (R, 403)])
def test_keys_are_checked_before_anything_changes(learned, headers, code):
    agent, c = learned
    before = _state(agent)
    assert c.post("/v1/documents", json=DOCS[0], headers=headers).status_code == code
    assert c.post("/v1/adapters/rollback", headers=headers).status_code == code
    doc = agent.stack.resolve("prod").doc_ids[0]
    assert c.post(f"/v1/documents/{doc}/remove", headers=headers).status_code == code
    assert _state(agent) == before


def test_a_cell_of_the_matrix_shows_the_versions_own_replies(learned):
    """The monitor keeps each version's replies to the probes beside the figure; the audit page's cell route
    returns them next to the questions and reference answers (the untouched model's too)."""
    agent, c = learned
    prod = agent.stack.resolve("prod")
    for v in (prod.version, 0):
        for d in prod.doc_ids:
            cell = c.get(f"/v1/ui/cells/{v}/{d}", headers=R).json()
            assert cell["answers_recorded"] and cell["total"] == len(cell["probes"]) == 1, cell
            p = cell["probes"][0]
            assert isinstance(p["reply"], str) and isinstance(p["correct"], bool)
            assert p["question"] == agent.memory.probes(d)[0].question and p["answer"]
            assert cell["correct"] == sum(x["correct"] for x in cell["probes"])  # the figure is the marks' sum
            assert cell["value"] == agent.memory.ledger()[v][d]
    m = c.get("/v1/ui/matrix?view=promoted&tail=true", headers=R).json()
    assert m["answers_recorded"] is True


def test_removing_a_document_promotes_a_version_without_it(learned):
    """POST /v1/documents/{id}/remove (write key): waits for an update in flight (the stack's update lock),
    then commits and promotes a version without the document's adapter and reports what changed."""
    import threading
    import time

    from student.stack import AdapterRef

    agent, c = learned
    old = agent.stack.resolve("prod")
    assert len(old.adapters) == 2
    gone, kept = old.adapters[0].doc_ids[0], old.adapters[1].doc_ids[0]
    assert c.post(f"/v1/documents/{gone}/remove", headers=R).status_code == 403
    out = {}
    with agent.stack.updating():  # an update in flight elsewhere: the removal waits for it
        t = threading.Thread(target=lambda: out.update(r=c.post(f"/v1/documents/{gone}/remove", headers=W)))
        t.start()
        time.sleep(1.5)
        assert t.is_alive() and agent.stack.aliases()["prod"] == old.version
    t.join(300)
    r = out["r"]
    assert r.status_code == 200, r.text
    body = r.json()
    new = agent.stack.resolve("prod")
    assert body["version"] == new.version == max(agent.stack.versions()) and body["name"] == new.name
    assert body["parent"] == old.version and body["previous"] == old.name and body["documents"] == 1
    assert new.doc_ids == [kept] and [a.id for a in new.adapters] == [old.adapters[1].id]
    assert set(body["accuracy"]) == {gone, kept} and body["accuracy"][gone]["removed"]
    assert all(0 <= a["before"] <= 1 and 0 <= a["after"] <= 1 for a in body["accuracy"].values())
    assert body["accuracy"][kept]["after"] == agent.memory.ledger()[new.version][kept]
    assert agent.memory.answers(new.version, kept) is not None  # the removal's measurement keeps replies too
    v = c.get("/v1/adapters", headers=R).json()
    assert v["aliases"]["prod"] == new.version
    row = v["versions"][-1]
    assert row["status"] == "removed" and [d for a in row["adapters"] for d in a["documents"]] == [kept]
    models = {m["id"]: m for m in c.get("/v1/models", headers=R).json()["data"]}
    assert models["seal-student@prod"]["root"] == f"seal-student-v{new.version}"
    assert f"seal-student-v{new.version}" in models
    assert not c.get(f"/v1/documents/{gone}", headers=R).json()["in_prod"]
    q = {"model": "seal-student@prod", "messages": [{"role": "user", "content": "Who painted the harbour?"}],
         "max_tokens": 4}
    assert c.post("/v1/chat/completions", json=q, headers=R).json()["system_fingerprint"] == new.name
    # again: nothing to remove; unknown: 404; neither changes anything
    before = _state(agent)
    r = c.post(f"/v1/documents/{gone}/remove", headers=W)
    assert r.status_code == 409 and "not in prod" in r.json()["detail"]
    assert c.post("/v1/documents/0123456789abcdef/remove", headers=W).status_code == 404
    assert _state(agent) == before
    # a document folded into a consolidated adapter with others cannot be taken out alone
    a = new.adapters[0]
    folded = agent.stack.commit([AdapterRef("a-folded", (kept, gone), a.rank, "consolidated", a.files)], new.version,
                                note="fold (test)", move=("prod",))
    try:
        r = c.post(f"/v1/documents/{kept}/remove", headers=W)
        assert r.status_code == 409 and "folded into consolidated adapter a-folded" in r.json()["detail"]
        assert agent.stack.aliases()["prod"] == folded.version
    finally:
        agent.stack.set_alias("prod", new.version)


def test_removal_on_an_api_with_celery_workers_uses_the_serving_model(tiny_cfg, tmp_path):
    """With Celery workers no learner lives in the API process: the removal measures on the serving model,
    under the stack's update lock first (a worker's update in progress finishes first) and then the model's."""
    from agent.service import Agent
    from api.app import create_app
    from core.documents import passage_from_dict

    base = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(tmp_path / "state")},
        service={"api_keys": {READ: "read", WRITE: "write"}}, runtime={"threads": 1})
    learner = Agent.open(base)  # two documents learned by an embedded worker, as a Celery worker would
    try:
        learner.submit([passage_from_dict(d) for d in DOCS])
        learner.transport.join(timeout=300)
    finally:
        learner.close()
    cfg = base.with_overrides(service={**base.service.model_dump(), "mode": "celery"})
    agent = Agent.open(cfg, start=False)
    try:
        with TestClient(create_app(agent, dict(cfg.service.api_keys))) as c:
            old = agent.stack.resolve("prod")
            gone = old.adapters[1].doc_ids[0]
            r = c.post(f"/v1/documents/{gone}/remove", headers=W)
            assert r.status_code == 200, r.text
            new = agent.stack.resolve("prod")
            assert r.json()["version"] == new.version and new.doc_ids == [old.adapters[0].doc_ids[0]]
            assert agent.memory.update(new.version)["status"] == "removed"
            q = {"model": "seal-student@prod", "messages": [{"role": "user", "content": "Who painted?"}],
                 "max_tokens": 3}
            assert c.post("/v1/chat/completions", json=q, headers=R).json()["system_fingerprint"] == new.name
    finally:
        agent.close()


def test_a_query_past_the_server_time_limit_gets_504_and_leaves_its_batch(tiny_cfg, tmp_path):
    """serving.request_timeout_s: while the model is busy (its lock held here), a non-streaming query waits at
    most that long, then answers 504, and the request is taken out of the queue instead of decoded for nobody."""
    from agent.service import Agent
    from api.app import create_app

    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "state_dir": str(tmp_path / "state")},
        service={"api_keys": {READ: "read"}}, serving={"request_timeout_s": 0.5}, runtime={"threads": 1})
    agent = Agent.open(cfg)
    try:
        with TestClient(create_app(agent, dict(cfg.service.api_keys))) as c:
            body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            with agent.server.lock:  # the model is busy for longer than the limit
                r = c.post("/v1/chat/completions", json=body, headers=R)
            assert r.status_code == 504 and "request_timeout_s" in r.json()["error"]["message"]
            assert c.post("/v1/chat/completions", json=body, headers=R).status_code == 200  # free again: answers
    finally:
        agent.close()


def test_operating_routes_readiness_docs_offline_metrics_and_lists(learned):
    agent, c = learned
    r = c.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"model": "ok", "database": "ok"}
    assert c.get("/", follow_redirects=False).headers["location"] == "/ui"
    html = c.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()  # no network needed
    js = c.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    m = c.get("/metrics", headers=R).text
    assert "process_resident_memory_bytes" in m and "python_info" in m and "seal_jobs" in m
    docs = c.get("/v1/documents", params={"limit": 1}, headers=R).json()
    assert docs["total"] >= 2 and len(docs["documents"]) == 1
    page2 = c.get("/v1/documents", params={"limit": 1, "offset": 1}, headers=R).json()
    assert page2["documents"][0]["doc_id"] != docs["documents"][0]["doc_id"]
    r = c.get("/v1/jobs", params={"state": "bogus"}, headers=R)
    assert r.status_code == 422 and r.json()["error"]["param"] == "state"
    assert c.get("/v1/jobs", params={"state": "promoted"}, headers=R).status_code == 200


def test_readiness_names_a_database_that_does_not_answer(tiny_cfg, tmp_path):
    from agent.service import Agent

    cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "state_dir": str(tmp_path / "s")},
                                  runtime={"threads": 1})
    agent = Agent.open(cfg)
    try:
        assert agent.readiness() == {"model": None, "database": None}
        agent.transport.stop()  # the worker thread would meet the broken database too
        agent.jobs.engine.dispose()
        db = tmp_path / "s" / "memory.sqlite"
        db.unlink()
        db.mkdir()  # the file is gone and its path cannot be opened as a database
        assert agent.readiness()["database"] is not None
    finally:
        agent.close()


def test_recite_then_read_answers_routed_questions_from_the_adapters_recitation(tiny_cfg, tmp_path):
    """serving.answer: recite — a question about a learned document is answered by the untouched model reading
    what that document's adapter wrote out from its title; a general question is answered as usual; the
    recitation is written once per adapter."""
    from agent.service import Agent
    from api.app import create_app
    from evaluation.closed_book import OPEN_BOOK

    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(tmp_path / "state"),
                   "routing": {**tiny_cfg.continual.routing.model_dump(), "enabled": True}},
        serving={**tiny_cfg.serving.model_dump(), "answer": "recite", "max_wait_ms": 0},
        service={"api_keys": {READ: "read", WRITE: "write"}}, runtime={"threads": 1})
    agent = Agent.open(cfg)
    try:
        with TestClient(create_app(agent, dict(cfg.service.api_keys))) as c:
            assert c.post("/v1/documents", json={"documents": DOCS}, headers=W).status_code == 202
            _wait(agent)
            q = DOCS[0]["questions"][0]["question"]
            ask = {"model": "seal-student@prod", "messages": [{"role": "user", "content": q}], "max_tokens": 6}
            r = c.post("/v1/chat/completions", json=ask, headers=R).json()
            assert r["seal_answer"] == "recite" and r["system_fingerprint"] == "student-v2", r
            rec = agent.server.recitation("seal-student@prod", q)
            assert rec is not None and r["seal_adapters"] == [rec.adapter] and rec.text
            reading = agent.server.render_chat([{"role": "user", "content": OPEN_BOOK.format(context=rec.text, q=q)}])
            assert r["choices"][0]["message"]["content"] == agent.server.generate("base", reading, 6).text
            before = agent.server.stats.requests
            again = c.post("/v1/chat/completions", json=ask, headers=R).json()
            assert again["choices"] == r["choices"] and agent.server.stats.requests == before + 1  # no new recitation
            general = c.post("/v1/chat/completions", headers=R, json={**ask, "messages": [
                {"role": "user", "content": "Name a colour you like."}]}).json()
            assert "seal_answer" not in general
    finally:
        agent.close()


def test_a_document_past_the_configured_limits_is_refused_by_name_and_changes_nothing(tiny_cfg, tmp_path):
    from agent.service import Agent
    from api.app import create_app

    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "state_dir": str(tmp_path / "state")},
        service={"api_keys": {READ: "read", WRITE: "write"}, "max_document_words": 50, "max_document_parts": 2},
        runtime={"threads": 1})
    agent = Agent.open(cfg)
    try:
        with TestClient(create_app(agent, dict(cfg.service.api_keys))) as c:
            long = {"title": "Long", "context": "word " * 51}
            r = c.post("/v1/documents", json={"documents": [DOCS[0], long]}, headers=W)
            assert r.status_code == 413 and "max_document_words is 50" in r.json()["detail"], r.text
            assert r.json()["error"]["param"] == "documents.1.context"
            assert agent.jobs.counts()["queued"] == 0 and not agent.jobs.list()  # nothing accepted, nothing cut
    finally:
        agent.close()
    cfg = cfg.with_overrides(service={**cfg.service.model_dump(), "max_document_words": 10_000})
    agent = Agent.open(cfg)
    try:
        with TestClient(create_app(agent, dict(cfg.service.api_keys))) as c:
            sentences = " ".join(f"Sentence number {i} says something about the river." for i in range(120))
            r = c.post("/v1/documents", json={"title": "Many parts", "context": sentences}, headers=W)
            assert r.status_code == 422 and "max_document_parts is 2" in r.json()["detail"], r.text
            assert not agent.jobs.list()
    finally:
        agent.close()
