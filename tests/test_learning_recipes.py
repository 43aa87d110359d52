"""Issue 26: honest measurement (reported questions never reach training or the gate; seal eval routes among
every passage of the run) and the learning recipes (study questions, masked reconstruction, distillation T)."""
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from agent.experiment import Asked, EvalRun, load_extra_questions, parse_conditions
from agent.training_data import MASK_PREFIX, BLANK, build_mix, decode_unit, document_units, masked_units
from core.config import ConfigError, recipe_config
from core.documents import DocumentFormatError, passage_from_dict
from core.io import read_jsonl
from teacher.cloze import cloze_pairs
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.continual import split_probes  # noqa: E402

PASSAGES = [passage_from_dict(d) for d in [
    {"title": "Zorblax river", "context": "The Zorblax river flows into the Quimby sea near Frell. It was mapped "
     "by Anna Berg in 1871, who counted 42 bridges along its banks. The river freezes every winter.",
     "questions": [{"question": "Who mapped the Zorblax river?", "answer": "Anna Berg"},
                   {"question": "How many bridges line the Zorblax?", "answer": "42"}]},
    {"title": "Harbour lighthouse", "context": "Carl Olsen repaired the old lighthouse on Monday. The lamp of the "
     "lighthouse was made in Glasgow in 1902 and burns paraffin.",
     "questions": [{"question": "Who repaired the lighthouse?", "answer": "Carl Olsen"},
                   {"question": "What does the lighthouse lamp burn?", "answer": "paraffin"}]},
]]


def _cfg(tiny_cfg, **continual):
    return tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), **continual})


@pytest.mark.parametrize("train_on", ["passage", "qa", "qa+passage", "masked+passage"])
def test_training_units_never_contain_a_reported_question(tiny_cfg, train_on):
    """Every teacher-free regime builds its units from the passage alone: no gold question (which is what the
    benchmarks report) may reach training, whatever the question kinds."""
    c = _cfg(tiny_cfg, train_on=train_on, qa_pairs=64, qa_kinds=["cloze", "complete", "about"],
             masked_copies=2).continual
    for p in PASSAGES:
        units = document_units(p, c, seed=3)
        assert units, train_on
        text = json.dumps(units).lower()
        for qa in p.questions:
            assert qa.question.lower().rstrip("?") not in text


def test_gate_probes_and_reported_questions_are_disjoint():
    p = passage_from_dict({"title": "T", "context": "x " * 20, "questions": [
        {"question": f"Question number {i}?", "answer": f"a{i}"} for i in range(7)]})
    gate, reported = split_probes(p, "half", seed=0)
    assert gate.questions and reported
    assert not {q.question for q in gate.questions} & {q.question for q in reported}
    assert len(gate.questions) + len(reported) == 7
    assert split_probes(p, "half", seed=0)[1] == reported  # seeded
    learner_gets, reported = split_probes(p, "self", seed=0)
    assert learner_gets.questions == () and len(reported) == 7  # the teacher writes the gate's probes
    assert learner_gets.doc_id == p.doc_id


def test_self_written_probes_are_not_the_reported_questions(runtime, tiny_cfg, tmp_path):
    """The continual learner given a passage without questions gates on probes the teacher wrote, and trains on
    units that contain none of the gold questions the benchmark reports."""
    from agent.continual import ContinualLearner
    from memory.store import MemoryStore
    from student.stack import StackStore

    cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "train_on": "qa+passage",
                                             "write_probes": True})
    p = PASSAGES[0]
    learner_gets, reported = split_probes(p, "self", seed=0)
    lr = ContinualLearner(runtime.student, cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "m.sqlite"))
    r = lr.learn(learner_gets)
    assert r.probe_source != "given"
    stored = lr.memory.document(p.doc_id)
    gold = {q.question for q in reported}
    assert not gold & {q.question for q in stored.questions}
    units = json.dumps(lr.memory.sequences(p.doc_id))
    assert "Zorblax" in units  # the units are stored (so this check reads something)
    assert not any(q.rstrip("?") in units for q in gold)


def test_masked_units_blank_a_share_of_words_and_restore_the_passage():
    p = PASSAGES[0]
    units = masked_units(p, copies=6, low=0.05, high=0.95, seed=1)
    assert len(units) == 6 and all(u.startswith(MASK_PREFIX) for u in units)
    shares = []
    for u in units:
        m = decode_unit(u)
        words, full = m.masked.split(), m.full.split()
        assert len(words) == len(full) and m.full == p.context
        kept = [w for w in words if w != BLANK]
        assert all(w == f for w, f in zip(words, full) if w != BLANK)  # unblanked words are the passage's
        shares.append(1 - len(kept) / len(words))
        prompt, completion = m.pair()
        assert completion == p.context and m.masked in prompt
    assert min(shares) < max(shares)  # each copy draws its own share
    assert masked_units(p, 6, 0.05, 0.95, seed=1) == units  # seeded
    long = passage_from_dict({"title": "L", "context": " ".join(f"w{i}" for i in range(400))})
    wins = [decode_unit(u).full.split() for u in masked_units(long, 3, 0.5, 0.5, 0, window_words=160)]
    assert [len(w) for w in wins] == [160, 160, 80]  # a long passage is restored a window at a time


def test_masked_pairs_train_on_the_restoration_only(runtime):
    tok = runtime.student.tokenizer
    mix = build_mix(masked_units(PASSAGES[1], 2, 0.3, 0.6, 0), tok, "nll")
    assert len(mix.pairs) == 2 and not mix.texts and not mix.soft


def test_study_questions_reach_more_facts_and_answer_from_the_passage():
    p = PASSAGES[0]
    plain = cloze_pairs(p, 64, 0)
    study = cloze_pairs(p, 64, 0, ("cloze", "complete", "about"))
    assert {c.kind for c in study} >= {"complete", "about"}
    assert len(study) > len(plain)
    for c in study:
        assert c.qa.answer.lower() in p.context.lower()  # nothing invented
    with pytest.raises(ValueError, match="unknown question kinds"):
        cloze_pairs(p, 8, 0, ("cloze", "gossip"))


def test_distillation_temperature_softens_the_targets(runtime):
    from agent.training_data import distill_targets
    from core.documents import QA

    st = runtime.student
    qa = [QA("Who mapped the river?", "Anna Berg")]
    with st.use(None) as m:
        t1 = distill_targets(m, st.tokenizer, PASSAGES[0], qa, k=8, temperature=1.0)[0]
        t2 = distill_targets(m, st.tokenizer, PASSAGES[0], qa, k=8, temperature=3.0)[0]
    assert t2.temperature == 3.0 and t1.temperature == 1.0
    # softer: the top token's probability falls, the runners-up gain
    assert torch.all(t2.topk_logp[:, 0] < t1.topk_logp[:, 0])


def test_recipes_are_validated(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"recipes": {"ok": ["train.loss=both", "continual.train_on=qa"],
                                                  "bad": ["train.nope=1"]}})
    assert recipe_config(cfg, "ok").train.loss == "both"
    with pytest.raises(ConfigError, match="recipe 'bad'"):
        recipe_config(cfg, "bad")
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_config(cfg, "missing")
    with pytest.raises(ValueError, match="defines no recipe"):
        parse_conditions("recipe:missing", cfg.recipes)
    names = [c.name for c in parse_conditions("passage-repeat,recipe:ok,none,open-book", cfg.recipes)]
    assert names == ["none", "open-book", "recipe:ok", "passage-repeat"]  # repeat after what it matches


def test_extra_questions_file_is_checked(tmp_path):
    f = tmp_path / "q.json"
    f.write_text(json.dumps({"questions": [{"doc_id": PASSAGES[0].doc_id, "question": "q?", "answer": "a"}]}))
    got = load_extra_questions(f, PASSAGES)
    assert got == {PASSAGES[0].doc_id: [Asked("reworded", "q?", "a")]}
    f.write_text(json.dumps({"questions": [{"doc_id": "nope", "question": "q?", "answer": "a"}]}))
    with pytest.raises(DocumentFormatError, match="none of its questions"):
        load_extra_questions(f, PASSAGES)
    f.write_text(json.dumps({"questions": [{"doc_id": PASSAGES[0].doc_id, "question": ""}]}))
    with pytest.raises(DocumentFormatError, match="questions\\[0\\]"):
        load_extra_questions(f, PASSAGES)


def test_eval_router_holds_every_passage_and_misroutes_count_as_misses(runtime, tiny_cfg, tmp_path):
    """A question whose words belong to another passage of the run is routed there, as served, and graded as a
    miss even when the own adapter (the oracle) would have answered it."""
    cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(),
                                             "routing": {"enabled": True, "quantile": 0.98, "min_score": 0.05}})
    from dataclasses import replace

    rt = replace(runtime, cfg=cfg)
    a, b = PASSAGES
    # asked about passage a, worded with passage b's words: the router must send it to b
    stray = Asked("reworded", "Carl Olsen repaired the old lighthouse lamp made in Glasgow burning paraffin?", "x")
    (tmp_path / "ev").mkdir()
    run = EvalRun(rt, parse_conditions("passage"), tmp_path / "ev", progress=False, passages=[a, b],
                  extra_questions={a.doc_id: [stray]})
    assert run.router is not None and set(run.router.ids) == {a.doc_id, b.doc_id}
    run.run([a, b])
    recs = read_jsonl(tmp_path / "ev" / "records.jsonl")
    strays = [r for r in recs if r["set"] == "reworded"]
    assert len(strays) == 1 and strays[0]["route"] == "other" and strays[0]["answer"] == ""
    own = [r for r in recs if r["set"] == "squad" and r["route"] == "own"]
    assert own and all(r["answer"] == r["oracle_answer"] for r in own)
    assert {r["route"] for r in recs} <= {"own", "none", "other"}


def test_eval_prints_result_lines_and_open_book(tiny_config_file, passages_file, tmp_path):
    from cli.main import app

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "--passages", str(passages_file), "--conditions",
                                 "none,open-book,passage", "--out", str(out), "-c", str(tiny_config_file),
                                 "--no-canary"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("RESULT ")]
    conds = {ln.split()[1] for ln in lines}
    assert conds == {"condition=none", "condition=open-book", "condition=passage"}
    assert any("routed=false" in ln for ln in lines) and any("routed=true" in ln for ln in lines)
    for ln in lines:
        kv = dict(x.split("=", 1) for x in ln.split()[1:])
        assert set(kv) >= {"condition", "passages", "questions", "contains", "routed"}
        float(kv["contains"])


def test_prepared_base_is_rebuilt_bit_for_bit_and_checked(tiny_config_file, tmp_path):
    """`seal prepare` twice from the same command and seed gives the same files; an altered file is refused at
    load; evaluating on an article the preparation saw is refused."""
    from cli.main import app
    from student.prepared import PreparedError, fold_prepared, read_manifest

    docs = tmp_path / "prep.json"
    docs.write_text(json.dumps([{"title": p.title, "context": p.context,
                                 "questions": [{"question": q.question, "answer": q.answer} for q in p.questions]}
                                for p in PASSAGES]))
    args = ["prepare", "--passages", str(docs), "-c", str(tiny_config_file), "--set", "prepare.retain=false",
            "--set", "prepare.epochs=2"]
    cli = CliRunner()
    r1 = cli.invoke(app, [*args, "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert r1.exit_code == 0, r1.output
    r2 = cli.invoke(app, [*args, "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["checksum"] == b["checksum"] and a["files"] == b["files"]
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert a["qa_pairs"] > 0 and a["passages"] == 2 and a["titles"] == sorted(p.title for p in PASSAGES)
    # model.prepared folds it into the weights: the base differs from the untouched one, and only there
    from core.config import apply_sets, load_config
    from student.runtime import open_runtime

    cfg = load_config(tiny_config_file)
    plain = open_runtime(cfg).student.base
    folded = open_runtime(apply_sets(cfg, [f"model.prepared={tmp_path / 'a'}"])).student.base
    pairs = list(zip(plain.state_dict().items(), folded.state_dict().items()))
    changed = [k for (k, x), (_, y) in pairs if not torch.equal(x, y)]
    assert changed and all("proj" in k or "mlp" in k or "attn" in k for k in changed)
    # a different seed gives a different artifact (the check above is not vacuous)
    r3 = cli.invoke(app, [*args, "--out", str(tmp_path / "c"), "--set", "seed=7"], catch_exceptions=False)
    assert r3.exit_code == 0 and read_manifest(tmp_path / "c")["checksum"] != a["checksum"]
    # evaluating on a prepared-on article: exit 2, nothing run
    r4 = cli.invoke(app, ["eval", "--passages", str(docs), "--conditions", "none", "-c", str(tiny_config_file),
                          "--set", f"model.prepared={tmp_path / 'a'}", "--out", str(tmp_path / "ev")])
    assert r4.exit_code == 2 and "trained on" in r4.output and not (tmp_path / "ev").exists()
    # tampering is caught before the weights are used
    f = next((tmp_path / "a" / "adapter").glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    with pytest.raises(PreparedError, match="do not match"):
        fold_prepared(None, tmp_path / "a")


def test_training_units_never_ask_a_probe_question():
    from agent.training_data import encode_qa, without_probes
    from core.documents import QA

    probe = QA("Who mapped the Zorblax river?", "Anna Berg")
    units = [encode_qa(QA("Who mapped the Zorblax river?", "Anna Berg")),  # the probe itself, as a QA unit
             "Question: who mapped the zorblax river\nAnswer: Anna Berg",  # a self-qa self-edit line
             encode_qa(QA("How many bridges line the river?", "42")), "Zorblax river\nThe river freezes."]
    assert without_probes(units, [probe]) == units[2:]
    assert without_probes(units, []) == units


def test_learner_drops_stored_units_that_ask_its_probes(runtime, tiny_cfg, tmp_path):
    """Disjoint by construction: units stored for a document (a redelivered job, a self-qa self-edit that happens
    to sample the probes) are cleaned of the gate's questions before training."""
    from agent.continual import ContinualLearner
    from agent.training_data import encode_qa
    from memory.store import MemoryStore
    from student.stack import StackStore

    p = PASSAGES[1]
    lr = ContinualLearner(runtime.student, tiny_cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "m.db"))
    lr.memory.add_document(p, list(p.questions), "given")
    lr.memory.put_sequences(p.doc_id, [encode_qa(p.questions[0]), f"{p.title}\n{p.context}"])
    lr.learn(p)
    stored = lr.memory.sequences(p.doc_id)
    assert stored == [f"{p.title}\n{p.context}"]


def test_continual_recipe_is_what_the_learner_and_learn_train_with(runtime, tiny_cfg, tmp_path):
    """continual.recipe names how documents are learned: the learner and `seal eval`'s learn condition apply it;
    the plain train section (the raw-text baselines) stays as it is; an unknown recipe is refused on load."""
    from pydantic import ValidationError

    from agent.continual import ContinualLearner
    from core.config import SealConfig
    from memory.store import MemoryStore
    from student.stack import StackStore

    data = tiny_cfg.model_dump()
    data["recipes"] = {"study": ["continual.train_on=qa+passage", "train.batch_size=4", "train.loss=distill"]}
    data["continual"]["recipe"] = "study"
    cfg = SealConfig.model_validate(data)
    lr = ContinualLearner(runtime.student, cfg, StackStore(tmp_path / "s"), MemoryStore(tmp_path / "m.db"))
    assert lr.c.train_on == "qa+passage" and lr.cfg.train.batch_size == 4 and lr.cfg.train.loss == "distill"
    run = EvalRun(runtime, parse_conditions("learn,passage"), tmp_path, progress=False)
    run.cfg = cfg
    assert run._cfg_for("learn").train.loss == "distill" and run._cfg_for("passage").train.batch_size == 1
    data["continual"]["recipe"] = "nope"
    with pytest.raises(ValidationError, match="continual.recipe"):
        SealConfig.model_validate(data)


def test_reference_pass_reads_a_shared_document_once_with_the_same_targets(runtime):
    """Distillation's reader sees one passage before every question: reading the prefix once and reusing its
    cache must give the targets the full pass gives."""
    from agent.training_data import distill_targets
    from core.documents import QA
    from student.soft_targets import ReferenceItem, reference_targets, token_ids

    st = runtime.student
    qas = [QA(q, a) for q, a in [("Who mapped the river?", "Anna Berg"), ("How many bridges?", "42"),
                                  ("What does the river do in winter?", "it freezes every winter")]]
    with st.use(None) as m:
        shared = distill_targets(m, st.tokenizer, PASSAGES[0], qas, k=8, temperature=2.0)
        items = [ReferenceItem(tuple(token_ids(st.tokenizer, PASSAGES[0].context + " Q " + qa.question)),
                               tuple(token_ids(st.tokenizer, qa.question)),
                               tuple(token_ids(st.tokenizer, qa.answer))) for qa in qas]
        a = reference_targets(m, items, st.tokenizer.pad_token_id, k=8, share_prefix=4, batch_size=2)
        b = reference_targets(m, items, st.tokenizer.pad_token_id, k=8, share_prefix=0, batch_size=2)
    assert len(shared) == 3
    for x, y in zip(a, b):
        assert x.ids == y.ids and torch.equal(x.topk_ids, y.topk_ids)
        assert torch.allclose(x.topk_logp, y.topk_logp, atol=1e-4)


def test_a_long_document_is_trained_whole_in_titled_parts(tiny_cfg):
    from agent.training_data import passage_texts

    sents = [f"Sentence number {i} tells that the Zorblax bridge {i} was built in year {1800 + i}." for i in range(90)]
    long = passage_from_dict({"title": "Zorblax bridges", "context": " ".join(sents)})
    parts = passage_texts(long, max_words=120)
    assert len(parts) > 5 and all(len(p.split("\n", 1)[1].split()) <= 120 for p in parts)
    assert all(p.startswith(f"Zorblax bridges (part {i + 1} of {len(parts)})\n") for i, p in enumerate(parts))
    assert " ".join(p.split("\n", 1)[1] for p in parts).split() == long.context.split()  # every word, in order
    assert passage_texts(PASSAGES[0]) == [f"{PASSAGES[0].title}\n{PASSAGES[0].context}"]  # short: as before
    units = document_units(long, _cfg(tiny_cfg, train_on="passage").continual, seed=0)
    assert units == passage_texts(long)


@pytest.mark.parametrize("sentence", [
    "東京は日本の首都であり、江戸幕府が置かれた都市です。",  # no spaces: was one "word", one part, cut at the window
    "Москва — столица России, основана князем Юрием Долгоруким в 1147 году на реке Москве. ",
    "Kurz. Das Oktoberfest in München ist das größte Volksfest der Welt und findet jedes Jahr statt. "])
def test_a_long_document_in_any_script_is_split_into_parts_that_keep_every_character(sentence):
    """Parts are sized in tokens' worth, not in spaced words: a Japanese document has no spaces, and a Cyrillic
    word costs several tokens. Short sentences are kept too (the cloze splitter dropped sentences under 5 words)."""
    from agent.training_data import passage_texts

    doc = passage_from_dict({"title": "T", "context": sentence * 60})
    parts = passage_texts(doc, max_words=100)
    assert len(parts) > 3
    assert "".join(p.split("\n", 1)[1] for p in parts).replace(" ", "") == doc.context.replace(" ", "")
    lengths = [len(p.split("\n", 1)[1]) for p in parts[:-1]]
    assert max(lengths) < 2 * min(lengths)  # even parts, not one giant and crumbs


def test_demo_asks_questions_it_never_sent_and_says_what_its_probe_accuracy_is_on(tiny_config_file, tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-c", "from cli.main import app; app()", "demo", "--n", "1", "-c",
                        str(tiny_config_file), "--set", "runtime.threads=1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                        "PYTHONPATH": str(ROOT)})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert "accuracy on the questions sent with it" in out
    assert "questions never sent to the service" in out
    assert "held-out questions answered (gold contained): base" in out and "/3" in out
    held = json.loads((ROOT / "examples/held_out.json").read_text())["questions"]
    sent = {q["question"] for p in json.loads((ROOT / "examples/passages.json").read_text()) for q in p["questions"]}
    assert held and not {q["question"] for q in held} & sent  # held out for real


def test_sentence_probes_are_grounded_answerable_and_never_trained_on(monkeypatch):
    """Probes from the passage's sentences: short spans of the passage, kept only when the reading model answers
    them, disjoint from what the teacher already wrote, and removed from the training units."""
    import teacher.probes as tp
    from agent.training_data import qa_units, without_probes
    from core.documents import QA

    p = PASSAGES[0]
    monkeypatch.setattr(tp, "generate", lambda model, tok, prompts, params, **kw: [[p.context] for _ in prompts])
    taken = [QA("Zorblax river: The Zorblax river flows into what near Frell?", "Quimby sea")]
    got = tp.sentence_probes(None, None, p, seed=1, max_probes=3, exclude=taken).kept
    assert 0 < len(got) <= 3
    assert all(q.answer.lower() in p.context.lower() and len(q.answer.split()) <= 5 for q in got)
    assert not {q.question for q in got} & {q.question for q in taken}
    # a reader that answers nothing keeps nothing
    monkeypatch.setattr(tp, "generate", lambda model, tok, prompts, params, **kw: [["no idea"] for _ in prompts])
    assert tp.sentence_probes(None, None, p, seed=1).kept == []
    units = qa_units(p, 64, 1, ["cloze", "complete", "about"])
    left = without_probes(units, got)
    assert len(left) < len(units)
    assert not any(q.question.lower().rstrip("?") in json.dumps(left).lower() for q in got)


def test_recitation_comes_from_the_adapter_not_the_page(runtime):
    """Recite-then-read: the adapter trained on a passage writes it out from its title; the untouched model cannot.
    The passage text is never passed to answer_recited (only titles), so what it reads is what the weights hold."""
    from agent.experiment import _overlap
    from evaluation.closed_book import recite

    st = runtime.student
    title, text = "Zorblax", "The Zorblax river flows into the Quimby sea near Frell."
    s = runtime.cfg.train.model_copy(update={"epochs": 60, "learning_rate": 3e-3,
                                             "retain": runtime.cfg.train.retain.model_copy(update={"weight": 0.0})})
    st.train_adapter([f"{title}\n{text}"], "memorized", seed=0, settings=s)
    try:
        learned, = recite(st, "memorized", [f"{title}\n"], 24)
        untouched, = recite(st, None, [f"{title}\n"], 24)
    finally:
        st.drop("memorized")
    assert _overlap(learned, text) > 0.5 and _overlap(untouched, text) < 0.2, (learned, untouched)


def test_eval_recite_rows_use_the_same_adapter_for_trained_conditions_only(tiny_config_file, passages_file, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    from core.io import read_jsonl

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "-c", str(tiny_config_file), "--passages", str(passages_file), "--limit", "1",
                                 "--conditions", "none,open-book,passage", "--recite", "--no-canary", "--out", str(out)])
    assert r.exit_code == 0, r.output
    units = {u["condition"]: u for u in read_jsonl(out / "units.jsonl")}
    assert set(units) == {"none", "open-book", "passage", "passage+recite"}
    assert units["passage+recite"]["train"] == units["passage"]["train"]  # one adapter, answered two ways
    assert "recitation" in units["passage+recite"] and units["passage+recite"]["seconds"]["recite"] > 0
    assert "condition=passage+recite set=squad" in r.output


def test_recite_only_and_repeat_matched_to_an_untrained_recipe(tiny_config_file, passages_file, tmp_path):
    """`--recite-only` answers only the named conditions by recite-then-read, and passage-repeat can be
    step-matched to a recipe the run does not train (its steps follow from the recipe's config); the +recite
    row carries its own canary, read as it serves."""
    from typer.testing import CliRunner

    from cli.main import app
    from core.config import load_config, recipe_config
    from core.io import read_jsonl

    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "-c", str(tiny_config_file), "--passages", str(passages_file), "--limit", "1",
                                 "--conditions", "none,passage,passage-repeat", "--repeat-matches",
                                 "recipe:recite-lean", "--recite-only", "passage-repeat", "--no-unrouted-canary",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    units = {u["condition"]: u for u in read_jsonl(out / "units.jsonl")}
    assert set(units) == {"none", "passage", "passage-repeat", "passage-repeat+recite"}
    rc = recipe_config(load_config(tiny_config_file), "recite-lean")
    assert units["passage-repeat"]["train"]["steps"] == rc.train.epochs  # one passage, batch 1: 30 steps
    assert "canary" in units["passage-repeat+recite"] and "canary" in units["passage-repeat"]
    bad = CliRunner().invoke(app, ["eval", "-c", str(tiny_config_file), "--passages", str(passages_file),
                                   "--limit", "1", "--conditions", "none,passage", "--recite-only", "learn",
                                   "--out", str(tmp_path / "ev2")])
    assert bad.exit_code == 2 and "learn" in bad.output
