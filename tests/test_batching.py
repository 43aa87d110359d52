"""Batched serving (serving/batching.py): concurrent requests decoded together must answer exactly as alone, each
with its own version's weights; the queue is bounded; streams stream; the API stays responsive."""
import asyncio
import threading

import pytest
import torch

from serving.batching import QueueFull
from core.config import ServingSettings
from serving.server import StudentServer
from student.generation import render_prompt
from student.stack import StackStore

PROMPTS = ["Where does the Zorblax river flow?", "Hi", "Tell me about the northern harbour of Kessel in winter, please.",
           "What is 7 times 8?", "Name a colour.", "Who painted the harbour?"]
DOCS = ["The Zorblax river flows into the Quimby sea near the town of Frell.",
        "Anna Berg painted the northern harbour of Kessel in the winter of 1881."]


@pytest.fixture()
def two_versions(runtime, tmp_path):
    """A stack with two versions whose adapters answer differently (trained hard on different text)."""
    st = runtime.student
    store = StackStore(tmp_path / "stack")
    hard = st.settings.model_copy(update={"epochs": 8, "learning_rate": 5e-2})
    with store.writer():
        refs = []
        for i, d in enumerate(DOCS):
            st.train_adapter([d] * 4, f"live{i}", seed=i, settings=hard)
            refs.append(store.add_adapter(st, f"live{i}", f"a{i + 1:05d}", [f"doc{i}"]))
            store.commit(refs[-1:], parent=None, note=f"doc{i}", move=("latest",))
            st.drop(f"live{i}")
    return st, store


def server(st, store, **kw) -> StudentServer:
    return StudentServer(st, store, "tiny", settings=ServingSettings(**({"max_wait_ms": 300} | kw)))


def alone(st, names, prompt: str, n: int) -> str:
    """The unbatched reference: transformers' own greedy generate on one prompt."""
    tok = st.tokenizer
    enc = tok([render_prompt(tok, prompt)], return_tensors="pt", add_special_tokens=False)
    with st.use(names) as m, torch.inference_mode():
        out = m.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def submit_all(srv, jobs):
    """Submit every (model, prompt, max_tokens) before the batcher starts a batch, then wait for all."""
    with srv.lock:  # hold the model so that every request is queued before the first batch is taken
        reqs = [srv.submit(m, render_prompt(srv.student.tokenizer, p), n) for m, p, n in jobs]
    return [r.future.result(timeout=120) for r in reqs]


def test_batched_greedy_equals_unbatched_for_mixed_lengths(two_versions):
    st, store = two_versions
    lens = [3, 9, 16, 1, 12, 7]
    srv = server(st, store, max_batch=8)
    try:
        got = submit_all(srv, [("base", p, n) for p, n in zip(PROMPTS, lens)])
    finally:
        srv.close()
    assert max(g.batch_size for g in got) == len(PROMPTS)  # they really were decoded together
    for g, p, n in zip(got, PROMPTS, lens):
        assert g.text == alone(st, None, p, n), p
        assert g.completion_tokens <= n and (g.finish_reason == "length") == (g.completion_tokens == n)
    one = server(st, store, max_batch=1)
    try:
        singles = submit_all(one, [("base", p, n) for p, n in zip(PROMPTS, lens)])
    finally:
        one.close()
    assert [g.text for g in singles] == [g.text for g in got] and {g.batch_size for g in singles} == {1}


def test_two_versions_in_flight_each_answer_with_their_own_weights(two_versions):
    st, store = two_versions
    srv = server(st, store, max_batch=8)
    jobs = [(m, p, 10) for p in PROMPTS[:3] for m in ("seal-student-v1", "seal-student-v2", "base")]
    try:
        got = submit_all(srv, jobs)
    finally:
        srv.close()
    want = {"seal-student-v1": ["a00001"], "seal-student-v2": ["a00002"], "base": None}
    for (m, p, n), g in zip(jobs, got):
        assert g.text == alone(st, want[m], p, n), (m, p)
    texts = {m: [g.text for (mm, _, _), g in zip(jobs, got) if mm == m] for m in want}
    assert texts["seal-student-v1"] != texts["seal-student-v2"]  # the versions differ, so mixing would show


def test_sampling_is_seeded_per_request_whatever_the_batch(two_versions):
    st, store = two_versions
    srv = server(st, store, max_batch=8)
    prompt = render_prompt(st.tokenizer, PROMPTS[0])
    try:
        with srv.lock:
            a = srv.submit("base", prompt, 12, temperature=1.0, seed=7)
            others = [srv.submit("base", render_prompt(st.tokenizer, p), 12, temperature=1.0, seed=i)
                      for i, p in enumerate(PROMPTS[1:4])]
        a.future.result(60)
        b = srv.submit("base", prompt, 12, temperature=1.0, seed=7)  # alone, later
        assert a.future.result().text == b.future.result(60).text
        assert a.future.result().batch_size == 4 and b.future.result().batch_size == 1
        [o.future.result(60) for o in others]
    finally:
        srv.close()


def test_a_full_queue_refuses_and_a_stream_streams_inside_a_batch(two_versions):
    st, store = two_versions
    srv = server(st, store, max_batch=4, max_queue=3)
    prompt = render_prompt(st.tokenizer, PROMPTS[2])
    try:
        with srv.lock:
            pieces = srv.stream("base", prompt, 16)  # queued; the lock keeps the batcher from starting
            others = [srv.submit("base", render_prompt(st.tokenizer, p), 16) for p in PROMPTS[:2]]
            with pytest.raises(QueueFull, match="full"):
                srv.submit("base", prompt, 4)
        got = list(pieces)
        plain = [o.future.result(60) for o in others]
    finally:
        srv.close()
    assert len(got) > 1 and "".join(got) == alone(st, None, PROMPTS[2], 16)
    assert plain[0].batch_size == 3  # the stream and the two others were one batch


def test_loaded_versions_stay_bounded(two_versions):
    st, store = two_versions
    srv = server(st, store, max_loaded_versions=1, max_wait_ms=0)
    try:
        srv.generate("seal-student-v1", "Hi", 2)
        assert "a00001" in st.adapters()
        srv.generate("seal-student-v2", "Hi", 2)
        assert "a00002" in st.adapters() and "a00001" not in st.adapters() and len(srv.loaded) == 1
        hi = render_prompt(st.tokenizer, "Hi")
        assert srv.generate("seal-student-v1", hi, 3).text == alone(st, ["a00001"], "Hi", 3)
    finally:
        srv.close()


def test_api_answers_health_while_generations_wait_and_503_when_full(tiny_cfg, tmp_path):
    """More requests in flight than the server has threads (40): handlers that held a thread while the model is
    busy would leave /healthz waiting; awaiting handlers leave it free. One more than the queue holds gets 503."""
    import httpx

    from agent.service import Agent
    from api.app import create_app

    n = 48
    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "state_dir": str(tmp_path / "state")},
        serving={"max_batch": 16, "max_queue": n, "max_wait_ms": 0}, runtime={"threads": 1})
    agent = Agent.open(cfg)
    app = create_app(agent, {"read-key-0001": "read"})
    body = {"model": "base", "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 24}

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=300,
                                     headers={"Authorization": "Bearer read-key-0001"}) as c:
            agent.server.lock.acquire()  # the model is busy: requests queue behind it
            try:
                chats = [asyncio.create_task(c.post("/v1/chat/completions", json=body)) for _ in range(n)]
                b = agent.server.batcher
                for _ in range(6000):
                    if b.depth() + b.in_flight() == n or any(t.done() for t in chats):
                        break
                    await asyncio.sleep(0.01)
                assert b.depth() + b.in_flight() == n, [t.result().text for t in chats if t.done()][:1]
                health = await asyncio.wait_for(c.get("/healthz"), 60)  # a deadlock guard, not a timing check
                # the batcher may hold a batch taken from the queue: add requests until the queue is at its bound
                for _ in range(17):
                    t = asyncio.create_task(c.post("/v1/chat/completions", json=body))
                    chats.append(t)
                    for _ in range(6000):
                        if t.done() or b.depth() + b.in_flight() == len(chats):
                            break
                        await asyncio.sleep(0.01)
                    if t.done():
                        break
                full = chats.pop().result()
                assert not any(t.done() for t in chats)
            finally:
                agent.server.lock.release()
            done = await asyncio.gather(*chats)
            return health, full, done, (await c.get("/metrics")).text

    try:
        health, full, done, metrics = asyncio.run(scenario())
    finally:
        agent.close()
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1 and "full" in full.json()["detail"]
    assert all(d.status_code == 200 for d in done)
    texts = {d.json()["choices"][0]["message"]["content"] for d in done}
    assert len(texts) == 1  # the same greedy answer in every batch
    sizes = {ln.split()[0]: float(ln.split()[1]) for ln in metrics.splitlines() if ln.startswith("seal_batch_size")}
    assert sizes["seal_batch_size_sum"] == len(done) and sizes["seal_batch_size_count"] < len(done)  # batched
    assert 'seal_queue_wait_seconds_bucket{le="+Inf"} ' + f"{float(len(done))}" in metrics
    assert "seal_generation_queue_depth 0.0" in metrics


def test_unbuildable_routing_serves_the_base_never_every_adapter(two_versions, tmp_path):
    """Routing on, but the version's documents are not in memory (so no router can be built): every request must
    meet the base weights, counted, not the whole stack of adapters at once."""
    from core.config import CanarySettings, RoutingSettings
    from memory.store import MemoryStore
    from serving.routing import RoutingCache

    st, store = two_versions
    cache = RoutingCache(MemoryStore(tmp_path / "empty.sqlite"), RoutingSettings(), CanarySettings())
    srv = StudentServer(st, store, "tiny", settings=ServingSettings(max_wait_ms=300), routing=cache)
    try:
        m = store.manifest(2)
        names, routed = srv.activate_batch(m, ["Where does the Zorblax river flow?", "Hi"])
        assert names == [[], []] and routed
        assert srv.stats.routing_unavailable == 2
    finally:
        srv.close()


def test_one_failing_row_fails_only_its_own_request(two_versions, monkeypatch):
    """A row whose decoding raises must not fail the requests that shared its batch."""
    import serving.batching as sb

    real = sb.decode

    def flaky(model, tok, rows):
        if any("BOOM" in tok.decode(r.prompt_ids) for r in rows):
            raise RuntimeError("this row cannot be decoded")
        return real(model, tok, rows)

    monkeypatch.setattr(sb, "decode", flaky)
    st, store = two_versions
    srv = server(st, store, max_batch=8)
    try:
        with srv.lock:
            reqs = [srv.submit("base", render_prompt(st.tokenizer, p), 4) for p in ["Hi", "BOOM now", "Name a colour."]]
        outs = []
        for r in reqs:
            try:
                outs.append(r.future.result(timeout=120).text)
            except RuntimeError as e:
                outs.append(e)
    finally:
        srv.close()
    assert isinstance(outs[1], RuntimeError)
    assert outs[0] == alone(st, None, "Hi", 4) and outs[2] == alone(st, None, "Name a colour.", 4)


def test_a_prompt_that_cannot_fit_the_window_is_refused_before_the_batch(two_versions):
    from serving.batching import PromptTooLong

    st, store = two_versions
    srv = server(st, store)
    try:
        window = st.base.config.max_position_embeddings
        with pytest.raises(PromptTooLong, match=f"window of {window}"):
            srv.submit("base", "word " * (window + 10), 8)
        assert srv.submit("base", "Hi", 4).future.result(timeout=120).text is not None  # the server still answers
    finally:
        srv.close()


@pytest.mark.parametrize("bound", ["bytes", "count"])
def test_routed_serving_loads_only_routed_adapters_within_the_cache_budget(runtime, tiny_cfg, tmp_path, bound):
    from core.config import CanarySettings, RoutingSettings
    from core.documents import Passage
    from memory.store import MemoryStore
    from serving.routing import RoutingCache

    st = runtime.student
    docs = [Passage("Zorblax", DOCS[0], ()), Passage("Harbour", DOCS[1], ()),
            Passage("Quartz", "Grey quartz crystals grow slowly in the caves of Ondra.", ())]
    store, mem = StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "mem.sqlite")
    hard = st.settings.model_copy(update={"epochs": 2})
    with store.writer():
        refs = []
        for i, p in enumerate(docs):
            mem.add_document(p, [])
            st.train_adapter([p.context], f"live{i}", seed=i, settings=hard)
            refs.append(store.add_adapter(st, f"live{i}", f"a{i + 1:05d}", [p.doc_id]))
            st.drop(f"live{i}")
        m = store.commit(refs, parent=None, move=("prod",))
    srv = StudentServer(st, store, "tiny", settings=ServingSettings(max_wait_ms=0),
                        routing=RoutingCache(mem, RoutingSettings(), CanarySettings()))
    from student.adapters import adapter_memory_bytes

    size = adapter_memory_bytes(store.adapter_dir("a00001"))  # loaded (float32) bytes, whatever the storage
    if bound == "bytes":
        srv.cache.budget = int(size * 1.5)  # room for one adapter, not two
    else:
        srv.cache.max_count = 1  # serving.adapter_slots: 1
    try:
        general = srv.generate("seal-student@prod", "Name a colour.", 2, route_text="Name a colour.")
        assert general.adapters == () and not set(st.adapters()) & {r.id for r in refs}  # nothing loaded
        seen = []
        for q, want in [("Where does the Zorblax river flow?", "a00001"), ("Who painted the harbour of Kessel?",
                        "a00002"), ("Where do grey quartz crystals grow?", "a00003"),
                        ("Where does the Zorblax river flow?", "a00001")]:
            g = srv.generate("seal-student@prod", q, 2, route_text=q)
            assert g.adapters == (want,), (q, g.adapters)
            live = set(st.adapters()) & {r.id for r in refs}
            assert live == {want} and srv.cache.ids() == [want] and srv.cache.bytes <= srv.cache.budget
            seen.append(want)
            if len(seen) == 1:
                first = next(q for n, q in st.peft.named_parameters() if ".lora_A.a00001." in n)
        assert m.version == 1 and seen[-1] == "a00001"  # evicted, then loaded again (checksums verified on load)
        # after the first eviction every load filled the evicted adapter's modules instead of building new ones:
        # four loads of three adapters, one set of LoRA modules
        assert [n for n in st.peft.peft_config if n.startswith("a0")] == ["a00001"] and st.free_slots() == 0
        assert any(q is first for n, q in st.peft.named_parameters() if ".lora_A.a00001." in n)
    finally:
        srv.close()
        mem.close()


def test_the_router_is_built_once_per_version_outside_the_batcher(runtime, tmp_path, monkeypatch):
    """Warming in the request's thread builds a version's routing once; batches then only look it up (the
    batcher thread, which holds the model lock, never builds one), whatever versions alternate."""
    import serving.routing as routing_mod
    from core.config import CanarySettings, RoutingSettings
    from core.documents import Passage
    from memory.store import MemoryStore
    from serving.routing import RoutingCache

    st = runtime.student
    store, mem = StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "mem.sqlite")
    with store.writer():
        refs = []
        for i, text in enumerate(DOCS):
            p = Passage(f"Doc {i}", text, ())
            mem.add_document(p, [])
            st.train_adapter([text], f"live{i}", seed=i, settings=st.settings.model_copy(update={"epochs": 1}))
            refs.append(store.add_adapter(st, f"live{i}", f"a{i + 1:05d}", [p.doc_id]))
            st.drop(f"live{i}")
            store.commit(refs[:], parent=None)
    builds, threads = [], []
    real = routing_mod.build_routing

    def counted(*a, **k):
        builds.append(1)
        threads.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(routing_mod, "build_routing", counted)
    srv = StudentServer(st, store, "tiny", settings=ServingSettings(max_wait_ms=0),
                        routing=RoutingCache(mem, RoutingSettings(), CanarySettings()))
    try:
        for model in ["seal-student-v1", "seal-student-v2"] * 3:
            srv.warm_routing(model)
            srv.generate(model, PROMPTS[0], 2, route_text=PROMPTS[0])
        assert len(builds) == 2 and set(threads) == {threading.current_thread().name}
    finally:
        srv.close()
        mem.close()
