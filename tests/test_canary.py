"""General ability on the tiny model: the canary file is validated, drift is 0 for the base and > 0 after an
update, and the gate refuses an update that damages the model, leaving prod as it was."""
import json

import pytest

from evaluation.canary import CanaryError, GeneralMonitor, load_canary, load_neutral_prompts
from evaluation.closed_book import answer
from agent.continual import ContinualLearner, forgetting_report
from evaluation.graders import normalize
from core.documents import passage_from_dict
from memory.store import MemoryStore
from student.stack import StackStore

DOC = passage_from_dict({"title": "Zorblax", "context": "The Zorblax river flows into the Quimby sea near Frell.",
                         "questions": [{"question": "Where does the Zorblax flow?", "answer": "Quimby sea"}]})
QUESTIONS = [f"What is word number {i}?" for i in range(14)]


def test_shipped_canary_and_prompts_are_valid():
    items = load_canary()
    drift, retain = load_neutral_prompts()
    assert len(items) >= 150 and len({normalize(c.question) for c in items}) == len(items)
    assert len(drift) >= 32 and len(retain) >= 32
    assert not {normalize(p) for p in drift} & {normalize(c.question) for c in items}


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"question": "x"}', "must be a list"),
    (json.dumps([{"question": "q", "answers": []}] * 12), "non-empty list"),
    (json.dumps([{"question": "", "answers": ["blue"]}]), "non-empty string"),
    (json.dumps([{"question": "same?", "answers": ["blue"]}] * 12), "duplicate question"),
    (json.dumps([{"question": f"q{i}?", "answers": ["blue"]} for i in range(3)]), "at least 10"),
])
def test_bad_canary_files_are_refused_with_the_reason(tmp_path, content, message):
    p = tmp_path / "canary.json"
    p.write_text(content)
    with pytest.raises(CanaryError, match=message):
        load_canary(p)


def test_neutral_prompts_must_not_overlap(tmp_path):
    p = tmp_path / "prompts.json"
    p.write_text(json.dumps({"drift": ["Name a fruit.", "Say hi."], "retain": ["say hi"]}))
    with pytest.raises(CanaryError, match="both 'drift' and 'retain'"):
        load_neutral_prompts(p)


def test_cli_exits_2_on_a_bad_canary_file(tmp_path, tiny_config_file):
    from typer.testing import CliRunner

    from cli.main import app

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = CliRunner().invoke(app, ["forgetting", "--config", str(tiny_config_file), "--set",
                                 f"continual.canary.file={bad}"])
    assert r.exit_code == 2
    assert "continual.canary" in r.output and "must be an object" in r.output


@pytest.fixture()
def tiny_canary(runtime, tmp_path):
    """The tiny model knows nothing (it answers with an empty string), so first teach it 14 answers and merge
    them into its weights (the autouse fixture restores them afterwards); its greedy replies then are a canary
    it passes by construction, and an update that damages it shows as a drop."""
    from evaluation.closed_book import question_prompt
    from student.generation import render_prompt

    st = runtime.student
    words = ["river", "harbour", "winter", "stone", "garden", "market", "bridge", "forest", "candle", "silver",
             "meadow", "castle", "island", "valley"]
    pairs = [(render_prompt(st.tokenizer, question_prompt(q)), w) for q, w in zip(QUESTIONS, words)]
    st.train_adapter([], "knows", seed=0, pairs=pairs,
                     settings=st.settings.model_copy(update={"epochs": 40, "learning_rate": 2e-2}))
    st.merge_into_base("knows")
    replies = answer(st, None, QUESTIONS, 12, 8)
    items = [{"kind": "tiny", "question": q, "answers": [a]} for q, a in zip(QUESTIONS, replies) if normalize(a)]
    assert len(items) >= 10, replies
    p = tmp_path / "tiny-canary.json"
    p.write_text(json.dumps(items))
    return p


def make_learner(runtime, tiny_cfg, tmp_path, canary_file, train=None, **continual):
    cont = tiny_cfg.continual.model_dump()
    cont.update({"train_on": "passage", "canary": {**cont["canary"], "file": str(canary_file),
                                                    "max_new_tokens": 12}}, **continual)
    cfg = tiny_cfg.with_overrides(continual=cont, train={**tiny_cfg.train.model_dump(), **(train or {})})
    return ContinualLearner(runtime.student, cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "m.sqlite"))


def test_drift_is_zero_for_the_base_and_positive_after_an_update(runtime, tiny_cfg, tiny_canary):
    cfg = tiny_cfg
    mon = GeneralMonitor(cfg.continual.canary.model_copy(update={"file": str(tiny_canary), "max_new_tokens": 12}),
                         cfg.train.retain, cfg.model.cache_dir)
    st = runtime.student
    mon.prepare(st)
    base = mon.measure(st, None)
    assert abs(base.drift) < 1e-7 and base.canary.accuracy == 1.0
    st.train_adapter([DOC.context], "drifted", seed=0)
    try:
        after = mon.measure(st, ["drifted"])
    finally:
        st.drop("drifted")
    assert after.drift > 1e-6 and after.drift > 100 * abs(base.drift)


@pytest.mark.parametrize("retry", ["rescale", "retrain"])
def test_gate_refuses_a_damaging_update_and_prod_stays(runtime, tiny_cfg, tmp_path, tiny_canary, retry):
    gentle = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"learning_rate": 1e-6, "epochs": 1},
                          gate={"enabled": True, "min_gain": -1.0, "max_forgetting": 1.0, "max_canary_drop": 0.02})
    first = gentle.learn(DOC)
    assert first.status == "promoted", first.reason  # a tiny step keeps the canary: promoted
    assert first.canary == 1.0 and first.canary_drop == 0.0
    prod = gentle.stack.aliases()["prod"]

    other = passage_from_dict({"title": "Harbour", "context": "Anna Berg painted the northern harbour in winter.",
                               "questions": [{"question": "Who painted the harbour?", "answer": "Anna Berg"}]})
    harsh = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"learning_rate": 0.5, "epochs": 5},
                         gate={"enabled": True, "min_gain": -1.0, "max_forgetting": 1.0, "max_canary_drop": 0.02,
                               "retries": 1, "retry": retry, "rescale": 0.9})
    r = harsh.learn(other)
    assert r.status == "rejected"
    assert r.reason.startswith("not learnable within the budget after 2 tries: canary drop"), r.reason
    assert len(r.attempts) == 1 and r.attempts[0]["settings"]["learning_rate"] == 0.5
    assert r.attempts[0]["version"] == r.version - 1 and r.attempts[0]["scale"] == 1.0
    note = harsh.stack.manifest(r.version).note
    assert ("delta x0.9 of student-v" in note) == (retry == "rescale")
    assert harsh.stack.aliases()["prod"] == prod  # prod untouched
    assert other.doc_id not in harsh.memory.learned_at()
    general = harsh.memory.general()
    assert general[r.version]["canary"] < 0.98 and general[0]["canary"] == 1.0
    statuses = {u["version"]: u["status"] for u in harsh.memory.updates()}
    assert statuses[r.version] == "rejected" and statuses[r.attempts[0]["version"]] == "rejected"
    rep = forgetting_report(harsh.memory)  # the audit shows only promoted versions' canary, and the base's
    assert rep.canary_base == 1.0 and rep.canary == [1.0]


def test_drift_budget_refuses_with_its_reason(runtime, tiny_cfg, tmp_path, tiny_canary):
    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary,
                      gate={"enabled": True, "min_gain": -1.0, "max_forgetting": 1.0, "max_canary_drop": None,
                            "max_drift": 1e-9, "retries": 0})
    r = lr.learn(DOC)
    assert r.status == "rejected" and r.reason.startswith("drift ") and "budget" in r.reason
    assert r.drift > 1e-9 and "prod" not in lr.stack.aliases()


def test_scaling_an_adapter_scales_its_delta(runtime):
    """The rescale retry relies on this: x0 is the base function, x0.5 sits between base and the adapter."""
    import torch

    st = runtime.student
    ids = st.tokenizer("The Zorblax river flows", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = st.base(input_ids=ids).logits
    st.train_adapter([DOC.context], "scaled", seed=0)
    try:
        with torch.no_grad(), st.use("scaled") as m:
            full = m(input_ids=ids).logits
            st.scale_adapter("scaled", 0.5)
            half = m(input_ids=ids).logits
            st.scale_adapter("scaled", 0.0)
            zero = m(input_ids=ids).logits
    finally:
        st.drop("scaled")
    assert (full - base).abs().max() > 1e-3
    assert torch.allclose(zero, base, atol=1e-5)
    d_half, d_full = (half - base).norm(), (full - base).norm()
    assert 0.2 * d_full < d_half < 0.95 * d_full  # not linear in the delta (the model is not), but between


def test_the_retention_objective_pulls_a_drifted_student_back(runtime, tiny_cfg, tiny_canary):
    """The KL-to-base term that training adds (soft_loss on the retention targets), minimised alone on an
    adapter that drifted, brings the drift down: the term points the right way and is wired to the adapter."""
    import torch

    from student.soft_targets import mean_kl, soft_loss

    st = runtime.student
    c = tiny_cfg.continual.canary.model_copy(update={"file": str(tiny_canary), "max_new_tokens": 12})
    mon = GeneralMonitor(c, tiny_cfg.train.retain, tiny_cfg.model.cache_dir)
    mon.prepare(st)
    targets, pad = mon.retain_targets, st.tokenizer.pad_token_id
    assert targets and all(t.start < len(t.ids) for t in targets)
    st.train_adapter([DOC.context], "drifted", seed=0,
                     settings=tiny_cfg.train.model_copy(update={"learning_rate": 5e-2, "epochs": 10}))
    try:
        with st.use("drifted") as m:
            before = mean_kl(m, targets, pad)
            params = [p for n, p in m.named_parameters() if "lora_" in n and ".drifted." in n]
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=1e-2)
            for i in range(30):
                loss, _ = soft_loss(m, targets[(i * 8) % len(targets):][:8] or targets[:8], pad)
                loss.backward()
                opt.step()
                opt.zero_grad()
            for p in params:
                p.requires_grad_(False)
            after = mean_kl(m, targets, pad)
    finally:
        st.drop("drifted")
    assert before > 1e-4 and after < 0.5 * before, (before, after)


def test_the_canary_reads_routed_general_questions_as_served(runtime, tiny_cfg, tmp_path, tiny_canary, monkeypatch):
    """With serving.answer: recite, a general question routed to a document is served by the untouched model
    reading that document's recitation, so the canary scores it that way (through `reader`), not by the adapter
    answering directly; questions routed nowhere keep the base's replies."""
    cfg = tiny_cfg
    mon = GeneralMonitor(cfg.continual.canary.model_copy(update={"file": str(tiny_canary), "max_new_tokens": 12}),
                         cfg.train.retain, cfg.model.cache_dir)
    st = runtime.student
    mon.prepare(st, retain=False)
    items = load_canary(tiny_canary)

    class OneRouted:  # routes the first canary question to an adapter, the rest nowhere
        def names_for(self, qs):
            return [["a1"] if q == items[0].question else [] for q in qs]

    asked = []
    score = mon.measure(st, None, routing=OneRouted(), reader=lambda rt, qs: asked.extend(qs) or ["WRONG"] * len(qs))
    assert asked == [items[0].question]
    assert score.canary.correct == len(items) - 1 and score.canary.wrong == [(items[0].question, "WRONG")]
    # the learner hands the monitor a recite-then-read reader when the service recites
    seen = {}
    monkeypatch.setattr(GeneralMonitor, "measure", lambda self, *a, **kw: seen.update(kw) or score)
    lr = make_learner(runtime, tiny_cfg, tmp_path, tiny_canary, train={"epochs": 1}, gate={"enabled": False},
                      routing={"enabled": True, "quantile": 0.98})
    lr.cfg = lr.cfg.with_overrides(serving={**lr.cfg.serving.model_dump(), "answer": "recite"})
    lr.learn(DOC)
    assert callable(seen.get("reader"))
