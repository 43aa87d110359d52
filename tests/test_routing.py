"""Routed adapters: a question meets only the adapter of the learned document it is about, so a damaging
update leaves questions about nothing learned exactly as the untouched model answers them."""
import pytest

from serving.routing import RoutingCache, general_texts
from core.config import CanarySettings, RoutingSettings
from core.documents import passage_from_dict
from memory.router import DocumentRouter
from student.stack import load_version
from tests.test_canary import DOC, QUESTIONS, make_learner, tiny_canary  # noqa: F401 (a fixture)

DOCS = {
    "zorblax": "Zorblax river\nThe Zorblax river flows into the Quimby sea near the town of Frell.",
    "harbour": "Harbour painting\nAnna Berg painted the northern harbour of Kessel in the winter of 1881.",
    "enzyme": "Lactase\nLactase is the enzyme that splits lactose into glucose and galactose in the small intestine.",
}


def router(threshold=None, scorer="bm25", docs=None):
    background, _ = general_texts(CanarySettings())
    floor = RoutingSettings(scorer=scorer).floor
    return DocumentRouter(docs or DOCS, background, floor if threshold is None else threshold, scorer=scorer)


SCORERS = pytest.mark.parametrize("scorer", ["bm25", "cosine"])


@SCORERS
def test_questions_route_to_their_document_and_general_ones_to_none(scorer):
    r = router(scorer=scorer)
    assert r.route("Where does the Zorblax river flow?").doc_id == "zorblax"
    assert r.route("Who painted the harbour of Kessel?").doc_id == "harbour"
    assert r.route("What does lactase split lactose into?").doc_id == "enzyme"
    for q in ["What is the capital of France?", "How many days are in a week?", "What is 7 times 8?",
              "Who wrote Romeo and Juliet?"]:
        route = r.route(q)
        assert route.doc_id is None, (q, route)


@SCORERS
def test_calibration_keeps_most_general_questions_unrouted(scorer):
    """Calibrated on one half of the general questions, checked on the other half (and on the canary, which the
    router never sees): a threshold that only memorised its calibration set would fail here."""
    floor = RoutingSettings(scorer=scorer).floor
    r = router(scorer=scorer)
    _, general = general_texts(CanarySettings())
    calib, held = general[0::2], general[1::2]
    t = r.calibrate(calib, 0.98, floor / 2)
    assert t >= floor / 2
    assert sum(r.route(q).doc_id is not None for q in held) <= 0.05 * len(held)
    from evaluation.canary import load_canary

    canary = [c.question for c in load_canary(None)]
    assert sum(r.route(q).doc_id is not None for q in canary) <= 0.05 * len(canary)
    assert r.route("Where does the Zorblax river flow?").doc_id == "zorblax"


@pytest.mark.parametrize("scorer,bad", [("cosine", 0.0), ("cosine", 1.0), ("cosine", -0.2), ("bm25", 0.0),
                                        ("bm25", -1.0)])
def test_router_refuses_a_threshold_its_scorer_cannot_reach(scorer, bad):
    with pytest.raises(ValueError, match="threshold"):
        router(bad, scorer=scorer)


def test_router_and_config_refuse_an_unknown_scorer():
    with pytest.raises(ValueError, match="scorer"):
        router(1.0, scorer="dense")
    with pytest.raises(ValueError):
        RoutingSettings(scorer="dense")
    with pytest.raises(ValueError, match="cosine"):
        RoutingSettings(scorer="cosine", min_score=4.0)


def test_bm25_keeps_routing_own_questions_where_cosine_loses_them_among_many_documents():
    """The reason BM25 is the default: among many documents, general questions meet some document's common
    words, which raises a cosine threshold above the own questions' scores; BM25 does not reward a short query
    for being fully covered by common words. 60 synthetic documents that share a vocabulary of common words, each
    with two rare words of its own."""
    import random

    rng = random.Random(0)
    common = ("year month river city water people music house school power music light game world history "
              "church island country market").split()
    docs, own = {}, []
    for i in range(60):
        rare = [f"zq{i}alpha", f"vx{i}omega"]
        body = " ".join(rng.choice(common) for _ in range(40))
        docs[f"d{i}"] = f"Doc {i}\nThe {rare[0]} of {rare[1]} {body}."
        own.append((f"Which {rng.choice(common)} is the {rare[0]} in {rare[1]}?", f"d{i}"))
    general = [f"What {a} has the most {b}?" for a in common for b in common if a != b][:240]
    got = {}
    for scorer in ("bm25", "cosine"):
        r = router(scorer=scorer, docs=docs)
        r.calibrate(general, 0.98, RoutingSettings(scorer=scorer).floor)
        got[scorer] = sum(r.route(q).doc_id == d for q, d in own) / len(own)
    assert got["bm25"] >= 0.9 and got["bm25"] > got["cosine"], got


def test_config_refuses_routing_where_it_cannot_route(tiny_cfg):
    with pytest.raises(ValueError, match="routing"):
        tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "merge_each_update": True,
                                           "routing": {"enabled": True}})
    assert RoutingSettings().quantile == 0.98


def test_a_damaging_update_is_routed_away_from_general_questions(runtime, tiny_cfg, tmp_path, tiny_canary):
    """Trained hard enough that the canary collapses with the adapter on, yet promoted: the canary's questions
    are about no learned document, so they meet the untouched weights; the document's question meets its adapter."""
    from evaluation.closed_book import answer
    from serving.server import StudentServer

    other = passage_from_dict({"title": "Harbour", "context": "Anna Berg painted the northern harbour in winter.",
                               "questions": [{"question": "Who painted the northern harbour?", "answer": "Anna Berg"}]})
    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"learning_rate": 0.5, "epochs": 5},
                      gate={"enabled": True, "min_gain": -1.0, "max_forgetting": 1.0, "max_canary_drop": 0.02,
                            "retries": 0}, routing={"enabled": True, "quantile": 0.98, "min_score": 0.08})
    first = lr.learn(DOC)
    r = lr.learn(other)
    assert first.status == "promoted" and r.status == "promoted", (first.reason, r.reason)
    assert r.canary == 1.0 and r.canary_drop == 0.0  # routed: the canary meets the base
    prod = lr.prod()
    assert [a.doc_ids for a in prod.adapters] == [(DOC.doc_id,), (other.doc_id,)]  # two experts, no fold
    assert not any(a.merged for a in prod.adapters)
    names = load_version(lr.stack, lr.student, prod)
    routing = lr.routing(prod, names)
    assert routing.names_for([DOC.questions[0].question, other.questions[0].question]) == [[names[0]], [names[1]]]
    assert routing.names_for(QUESTIONS) == [[]] * len(QUESTIONS)
    unrouted = lr.general.measure(lr.student, names)  # every adapter on: the damage routing keeps away
    assert unrouted.canary.accuracy < 0.98

    server = StudentServer(lr.student, lr.stack, "tiny", routing=RoutingCache(lr.memory, lr.c.routing, lr.c.canary))
    prompt = "Answer the question with a short phrase.\nQuestion: " + QUESTIONS[0]
    base = server.generate("base", prompt, 8)
    served = server.generate("seal-student@prod", prompt, 8, route_text=QUESTIONS[0])
    assert served.text == base.text and served.model == prod.name and served.adapters == ()
    about = server.generate("seal-student@prod", "Who painted it?", 4, route_text=other.questions[0].question)
    assert about.adapters == (names[1],)
    assert answer(lr.student, routing, QUESTIONS[:3], 8, 4) == answer(lr.student, None, QUESTIONS[:3], 8, 4)


def test_routed_canary_reuses_base_replies_only_where_it_meets_the_base(runtime, tiny_cfg, tmp_path, tiny_canary):
    """The monitor answers unrouted canary questions from the untouched model's replies; the score must equal
    answering every question afresh with the routing, including a question that routes to an adapter."""
    from evaluation.canary import CanaryItem, score_canary

    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"learning_rate": 0.5, "epochs": 5},
                      gate={"enabled": True, "min_gain": -1.0, "max_forgetting": 1.0, "retries": 0},
                      routing={"enabled": True, "quantile": 0.98, "min_score": 0.08})
    assert lr.learn(DOC).status == "promoted"
    prod = lr.prod()
    names = load_version(lr.stack, lr.student, prod)
    routing = lr.routing(prod, names)
    lr.general.items = [*lr.general.items, CanaryItem(DOC.questions[0].question, (DOC.questions[0].answer,), "doc")]
    assert routing.names_for([DOC.questions[0].question]) == [names]
    fresh = score_canary(lr.student, routing, lr.general.items, lr.general.s.max_new_tokens, 4)
    memo = lr.general.measure(lr.student, names, routing=routing).canary
    assert (memo.correct, memo.wrong) == (fresh.correct, fresh.wrong)
    on = score_canary(lr.student, names, lr.general.items[-1:], lr.general.s.max_new_tokens, 4)
    base = score_canary(lr.student, None, lr.general.items[-1:], lr.general.s.max_new_tokens, 4)
    assert on.wrong != base.wrong  # the routed question's reply comes from the adapter, not the base memo
    key = lr.student.base_key
    lr.student.merge_into_base(names[0], track=True)
    assert lr.student.base_key != key  # other weights: the monitor must not reuse the base's replies
    lr.student.restore_base()
    untouched = lr.student.base_key
    lr.student.train_adapter(["Zorblax flows into the Quimby sea."], "m1", seed=0)
    lr.student.merge_into_base("m1")
    assert lr.student.base_key not in (key, untouched)


@SCORERS
def test_documents_in_any_script_are_routed(scorer):
    """Cyrillic, Japanese and accented Latin documents get index terms of their own (the old [a-z0-9] router kept
    only their digits), so a question in the same script reaches its document and the others stay apart."""
    docs = {**DOCS,
            "moscow": "Москва\nМосква — столица России, основана князем Юрием Долгоруким в 1147 году.",
            "tokyo": "東京\n東京は日本の首都であり、江戸幕府が置かれた都市です。",
            "munich": "München\nMünchen ist die Hauptstadt Bayerns und liegt an der Isar.",
            "kyiv": "Київ\nКиїв — столиця України, місто на річці Дніпро."}
    background, _ = general_texts(CanarySettings())
    r = DocumentRouter(docs, background, RoutingSettings(scorer=scorer).floor, scorer=scorer)
    assert r.route("Кто основал Москву?").doc_id == "moscow"
    assert r.route("東京はどこの首都ですか？").doc_id == "tokyo"
    assert r.route("An welchem Fluss liegt München?").doc_id == "munich"
    assert r.route("На якій річці стоїть Київ?").doc_id == "kyiv"
    assert r.route("Where does the Zorblax river flow?").doc_id == "zorblax"
    assert r.route("What is the capital of France?").doc_id is None


def test_routing_cache_keeps_each_version_and_is_consistent_across_threads(tmp_path):
    """Two versions asked in turn keep their own routing (no rebuild per switch), and readers on many threads
    never get another version's routing."""
    import threading
    from types import SimpleNamespace

    from memory.store import MemoryStore

    mem = MemoryStore(tmp_path / "m.sqlite")
    docs = [passage_from_dict({"title": t, "context": c}) for t, c in
            [("Zorblax river", "The Zorblax river flows into the Quimby sea near the town of Frell."),
             ("Harbour painting", "Anna Berg painted the northern harbour of Kessel in the winter of 1881.")]]
    for d in docs:
        mem.add_document(d, [], "none")
    ad = lambda i, d: SimpleNamespace(id=f"a{i}", doc_ids=(d.doc_id,))  # noqa: E731
    v1 = SimpleNamespace(version=1, adapters=(ad(1, docs[0]),))
    v2 = SimpleNamespace(version=2, adapters=(ad(1, docs[0]), ad(2, docs[1])))
    cache = RoutingCache(mem, RoutingSettings(), CanarySettings())
    r1, r2 = cache.get(v1, ["a1"]), cache.get(v2, ["a1", "a2"])
    assert cache.get(v1, ["a1"]) is r1 and cache.get(v2, ["a1", "a2"]) is r2  # both kept
    assert set(r1.adapter_of) == {docs[0].doc_id} and set(r2.adapter_of) == {d.doc_id for d in docs}
    bad = []

    def reader(m, names, want):
        for _ in range(200):
            if set(cache.get(m, names).adapter_of) != want:
                bad.append(m.version)

    ts = [threading.Thread(target=reader, args=a) for a in
          [(v1, ["a1"], {docs[0].doc_id}), (v2, ["a1", "a2"], {d.doc_id for d in docs})] * 4]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_the_gate_measures_recite_then_read_when_serving_recites(runtime, tiny_cfg, tmp_path, tiny_canary):
    """With serving.answer: recite the learner scores a version's routed probes as they will be served: the base
    model reading the adapter's recitation, not the adapter answering directly."""
    from evaluation.closed_book import OPEN_BOOK, recite
    from student.generation import SamplingParams, generate
    from teacher.passages import recitation_prompts

    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"epochs": 3},
                      gate={"enabled": False}, routing={"enabled": True, "quantile": 0.98, "min_score": 0.08})
    lr.cfg = lr.cfg.with_overrides(serving={**lr.cfg.serving.model_dump(), "answer": "recite"})
    res = lr.learn(DOC)
    prod = lr.prod()
    names = load_version(lr.stack, lr.student, prod)
    routing = lr.routing(prod, names)
    graded = lr.graded_of(prod, names)(DOC)
    q = DOC.questions[0].question
    assert routing.routes([q])[0].doc_id == DOC.doc_id, "the probe must route to its document for this test"
    text = recite(lr.student, names[0], recitation_prompts(DOC), 64)[0]
    with lr.student.use(None) as m:
        want = generate(m, lr.student.tokenizer, [OPEN_BOOK.format(context=text, q=q)],
                        SamplingParams(max_new_tokens=lr.cfg.eval.max_new_tokens))[0][0]
    assert res.version == prod.version and graded[0].answer == want


def test_the_monitor_reads_past_documents_recitations_again_instead_of_writing_them_again(runtime, tiny_cfg,
                                                                                           tmp_path, tiny_canary,
                                                                                           monkeypatch):
    """An earlier document's adapter never changes, so the replay of its probes on later versions reuses its
    recitation: each (adapter, part) is recited once across all updates, not once per update."""
    import evaluation.closed_book as cb

    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"epochs": 2},
                      gate={"enabled": False}, routing={"enabled": True, "quantile": 0.98, "min_score": 0.08})
    lr.cfg = lr.cfg.with_overrides(serving={**lr.cfg.serving.model_dump(), "answer": "recite"})
    written: list[tuple] = []
    real = cb.recite

    def counting(student, adapter, prompts, max_new_tokens):
        written.extend((adapter, p) for p in prompts)
        return real(student, adapter, prompts, max_new_tokens)

    monkeypatch.setattr(cb, "recite", counting)
    other = passage_from_dict({"title": "Quartz", "context": "Grey quartz crystals grow slowly in the caves of "
                               "Ondra, where miners count them each spring.",
                               "questions": [{"question": "Where do grey quartz crystals grow?", "answer": "Ondra"}]})
    third = passage_from_dict({"title": "Harbour", "context": "The harbour of Kessel was painted by Mira Tolven "
                               "in 1871, from the lighthouse steps.",
                               "questions": [{"question": "Who painted the harbour of Kessel?", "answer": "Tolven"}]})
    for d in (DOC, other, third):
        lr.learn(d)
    assert written, "the probes must be answered by recite-then-read for this test"
    assert len(written) == len(set(written)), "a past document's recitation was written again"


def test_documents_in_other_scripts_are_learned_and_their_questions_reach_their_adapters(runtime, tiny_cfg, tmp_path,
                                                                                         tiny_canary):
    """End to end on the tiny model: Cyrillic, Japanese and accented Latin documents are each trained into an
    adapter of their own (the tokenizer keeps their text: no unknown-token collapse), and a question in the
    document's script is routed, as served, to that document's adapter and to no other."""
    docs = [passage_from_dict({"title": t, "context": c}) for t, c in [
        ("Москва", "Москва — столица России, основана князем Юрием Долгоруким в 1147 году на реке Москве."),
        ("東京", "東京は日本の首都であり、江戸幕府が置かれた都市です。人口は約千四百万人です。"),
        ("München", "München ist die Hauptstadt Bayerns und liegt an der Isar; das Oktoberfest findet dort statt.")]]
    questions = {"Москва": "Кто основал Москву и в каком году?", "東京": "東京はどこの首都ですか？",
                 "München": "An welchem Fluss liegt München?"}
    tok = runtime.student.tokenizer
    for d in docs:
        ids = tok(d.context)["input_ids"]
        assert tok.unk_token_id is None or ids.count(tok.unk_token_id) < len(ids) / 4, d.title
    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"epochs": 2},
                      gate={"enabled": False}, routing={"enabled": True, "quantile": 0.98})
    results = [lr.learn(d) for d in docs]
    assert [r.status for r in results] == ["promoted"] * 3, [r.reason for r in results]
    assert all(r.seconds.get("train", 0) > 0 for r in results)
    prod = lr.prod()
    names = load_version(lr.stack, lr.student, prod)
    assert len(names) == 3
    routing = lr.routing(prod, names)
    by_title = {d.title: d.doc_id for d in docs}
    for title, q in questions.items():
        assert routing.router.route(q).doc_id == by_title[title], (title, routing.router.scores(q))
    assert routing.router.route("What is the capital of France?").doc_id is None


def test_a_long_documents_question_recites_and_reads_only_its_nearest_parts(runtime, monkeypatch):
    """Recite-then-read on a document of many parts: the reader gets the adapter's recitation of the question's
    nearest parts (never the page itself, never all fifty parts), each part recited once per adapter."""
    import evaluation.closed_book as cb
    from memory.router import nearest_parts

    parts = [(f"Bridges (part {i + 1} of 6)\n", f"Bridge {name} spans the {river} river and opened in {1800 + i}.")
             for i, (name, river) in enumerate([("Alda", "Quimby"), ("Brun", "Frell"), ("Cosk", "Zorblax"),
                                                 ("Dorn", "Kessel"), ("Evra", "Lumen"), ("Fane", "Orrin")])]
    assert 2 in nearest_parts("Which bridge spans the Zorblax river?", [t for _, t in parts], 2)
    assert nearest_parts("Tell me something", [t for _, t in parts], 2) == [0, 1]  # no shared word: the start
    recited, read = [], []
    monkeypatch.setattr(cb, "recite", lambda st, adapter, prompts, n: [f"RECITED<{p.strip()}>" for p in prompts
                                                                       if not recited.append(p) or True])
    monkeypatch.setattr(cb, "answer_open_book", lambda st, ctx, qs, n, b: [read.append(ctx) or ctx for _ in qs])
    memo = {}
    qs = ["Which bridge spans the Zorblax river?", "When did the bridge over the Zorblax open?",
          "What river does Fane span, the Orrin?"]
    out = cb.read_recited(runtime.student, "a1", parts, qs, 16, 4, k=2, memo=memo)
    assert all("RECITED<Bridges (part 3 of 6)>" in o for o in out[:2]) and "part 6 of 6" in out[2]
    assert all("spans the" not in ctx for ctx in read)  # the page never reaches the reader
    assert all(ctx.count("RECITED") == 2 for ctx in read)
    assert len(recited) == len(set(recited)) and len(recited) < len(parts)  # each part recited once, not all


def test_recitations_the_gate_wrote_are_served_from_the_store_without_reciting_again(runtime, tiny_cfg, tmp_path,
                                                                                     tiny_canary):
    """The learner's gate recites a document as served; the server (a new process in production: here a new
    server over the same state) reads that recitation from the memory store instead of decoding it again on the
    query's path, and a candidate's throwaway adapter name is never written down."""
    from core.config import ServingSettings
    from serving.server import StudentServer
    from teacher.passages import recitation_parts

    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"epochs": 2},
                      gate={"enabled": False}, routing={"enabled": True, "quantile": 0.98, "min_score": 0.08})
    lr.cfg = lr.cfg.with_overrides(serving={**lr.cfg.serving.model_dump(), "answer": "recite"})
    assert lr.learn(DOC).status == "promoted"
    prod = lr.prod()
    (adapter,) = [a.id for a in prod.adapters]
    prompt = recitation_parts(DOC)[0][0]
    stored = lr.memory.recitation(adapter, prompt)
    assert stored, "the gate's recitation was not kept in the store"
    lr.recitations()[("not-a-stack-adapter", prompt)] = "x"
    assert lr.memory.recitation("not-a-stack-adapter", prompt) is None
    for n in list(runtime.student.adapters()):
        runtime.student.drop(n)
    srv = StudentServer(runtime.student, lr.stack, "tiny", settings=ServingSettings(max_wait_ms=0, answer="recite"),
                        routing=RoutingCache(lr.memory, lr.c.routing, lr.c.canary))
    submitted = []
    real = srv.backend.submit
    srv.backend.submit = lambda *a, **k: submitted.append(a) or real(*a, **k)
    try:
        r = srv.recitation("seal-student@prod", DOC.questions[0].question)
        assert r is not None and r.adapter == adapter and r.text == stored and submitted == []
    finally:
        srv.close()
