"""Teacher RL (ReST-EM) on the tiny model: winners, completion-only loss, teacher versions, resume."""
import json

import pytest
import torch

from teacher.rl.rest_em import RestEM
from core.documents import passage_from_dict
from student.sequences import IGNORE, collate, tokenize_pairs
from teacher.rewards import Scored, reward, select_winners
from tests.conftest import ROOT

PASSAGES = [passage_from_dict(p) for p in json.loads((ROOT / "examples/passages.json").read_text())]


def test_candidates_the_guard_emptied_never_win(runtime, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_overrides(rl={"rounds": 1, "contexts": 2, "samples": 2, "threshold": -1.0},
                                  teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12})
    rt = type(runtime)(cfg, runtime.student, runtime.model_name)
    [summary] = RestEM(rt, PASSAGES, tmp_path).run()  # the tiny model's text never survives the guard
    assert summary["empty_after_guard"] == 4 and summary["winners"] == 0 and summary["new_teacher"] is None


def test_the_dense_reward_scores_every_candidate_by_answer_likelihood(runtime, tiny_cfg, tmp_path):
    """Containment is 0 for every tiny-model candidate; the likelihood reward still tells them apart."""
    cfg = tiny_cfg.with_overrides(rl={"rounds": 1, "contexts": 2, "samples": 2, "threshold": -1.0,
                                      "reward": "likelihood"},
                                  teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12})
    rt = type(runtime)(cfg, runtime.student, runtime.model_name)
    [summary] = RestEM(rt, PASSAGES, tmp_path).run()
    rows = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and summary["reward_kind"] == "likelihood"
    assert all(r["gain"] == 0 for r in rows)  # the sparse reward sees nothing
    assert all(r["reward"] == r["dense_gain"] == r["dense_after"] - r["dense_before"] for r in rows)
    assert all(r["dense_gain"] != 0 for r in rows) and len({round(r["dense_gain"], 6) for r in rows}) > 1


def test_drift_and_canary_drop_lower_the_reward(runtime, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_overrides(rl={"rounds": 1, "contexts": 1, "samples": 2, "threshold": -1.0,
                                      "reward": "likelihood", "drift_lambda": 1.0, "canary_lambda": 0.5},
                                  teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12})
    rt = type(runtime)(cfg, runtime.student, runtime.model_name)
    RestEM(rt, PASSAGES, tmp_path).run()
    rows = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["drift"] > 0 and r["canary_drop"] is not None
        assert r["reward"] == pytest.approx(r["dense_gain"] - r["drift"] - 0.5 * max(0.0, r["canary_drop"]))


def test_the_dense_reward_is_zero_for_a_no_op_and_positive_after_training_on_the_answers(runtime):
    from evaluation.closed_book import answer_likelihood, question_prompt
    from student.generation import render_prompt

    st, p = runtime.student, PASSAGES[0]
    before = answer_likelihood(st, None, p.questions)
    st.train_adapter([p.context], "noop", seed=0)
    st.scale_adapter("noop", 0.0)  # trained, then its delta zeroed: the update changes nothing
    try:
        noop = answer_likelihood(st, "noop", p.questions)
    finally:
        st.drop("noop")
    assert noop == pytest.approx(before, abs=1e-5)
    pairs = [(render_prompt(st.tokenizer, question_prompt(q.question)), q.answer) for q in p.questions]
    st.train_adapter([], "answers", seed=0, pairs=pairs)  # trains on the probes' own answers
    try:
        after = answer_likelihood(st, "answers", p.questions)
    finally:
        st.drop("answers")
    assert sum(after) / len(after) - sum(before) / len(before) > 0.1


def test_a_canary_or_drift_penalty_flips_the_winner_when_the_terms_disagree():
    from teacher.rewards import term_effect

    rows = [{"round": 0, "doc_id": "a", "k": 0, "gain": 0.4, "canary_drop": 0.10, "drift": 0.9},
            {"round": 0, "doc_id": "a", "k": 1, "gain": 0.2, "canary_drop": 0.00, "drift": 0.1},
            {"round": 0, "doc_id": "b", "k": 0, "gain": 0.2, "canary_drop": -0.05, "drift": 0.2},
            {"round": 0, "doc_id": "b", "k": 1, "gain": 0.0, "canary_drop": -0.30, "drift": 0.0}]
    same = term_effect(rows, "canary_drop", 1.0, "best", 0.0)  # a 10-point drop costs 0.1 < 0.2 gain apart
    assert same["contexts_changed"] == 0 and same["gain"] == pytest.approx(0.3)
    flip = term_effect(rows, "canary_drop", 3.0, "best", 0.0)  # now it costs 0.3: a's winner becomes k=1
    assert flip["contexts_changed"] == 1 and flip["gain"] == pytest.approx(0.2) and flip["term_value"] <= 0
    # a canary that rose earns nothing: b's no-gain candidate never wins on it
    assert flip["winners"] == 2
    assert term_effect(rows, "drift", 0.5, "best", 0.0)["contexts_changed"] == 1
    assert reward(0.0, 0.0, 0.0, canary_drop=-0.3, canary_lambda=1.0) == 0.0


def test_guard_emptied_candidates_are_the_rounds_passage_only_control():
    from teacher.rewards import passage_control

    rows = [{"doc_id": "a", "units": ["x"], "gain": 0.4}, {"doc_id": "a", "units": [], "gain": 0.2},
            {"doc_id": "b", "units": ["y"], "gain": 0.0}, {"doc_id": "b", "units": ["z"], "gain": 0.2},
            {"doc_id": "b", "units": [], "gain": 0.4}, {"doc_id": "c", "units": ["w"], "gain": 0.6}]
    pc = passage_control(rows)
    assert (pc["kept"], pc["emptied"]) == (4, 2)
    assert pc["kept_gain"] == pytest.approx(0.3) and pc["emptied_gain"] == pytest.approx(0.3)
    # c has no passage-only replicate, so it is left out of the pairing: a +0.2, b -0.3
    assert pc["paired_contexts"] == 2 and pc["paired_diff"] == pytest.approx(-0.05)


def test_the_product_regime_trains_candidates_with_retention_and_measures_their_general_cost(
        runtime, tiny_cfg, tmp_path):
    base = {"rounds": 1, "contexts": 1, "samples": 2, "threshold": -1.0, "reward": "likelihood"}
    teacher = {**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12}
    rows = {}
    for regime in ("paper", "product"):
        cfg = tiny_cfg.with_overrides(rl={**base, "regime": regime, "measure_general": "canary"}, teacher=teacher,
                                      train={**tiny_cfg.train.model_dump(),
                                             "retain": {**tiny_cfg.train.retain.model_dump(), "weight": 1.0}})
        rt = type(runtime)(cfg, runtime.student, runtime.model_name)
        RestEM(rt, PASSAGES, tmp_path / regime).run()
        rows[regime] = [json.loads(x) for x in (tmp_path / regime / "candidates.jsonl").read_text().splitlines()]
    for regime, rs in rows.items():
        assert len(rs) == 2
        for r in rs:  # measured with the lambdas at 0: reported, not rewarded
            assert r["drift"] > 0 and r["canary_drop"] is not None
            assert r["reward"] == pytest.approx(r["dense_gain"])
    # same samples, same seeds: retention is the only difference, and it keeps the student nearer the base
    assert [r["raw"] for r in rows["paper"]] == [r["raw"] for r in rows["product"]]
    assert sum(r["drift"] for r in rows["product"]) < sum(r["drift"] for r in rows["paper"])


def test_winner_selection_best_of_k_and_threshold():
    c = [Scored("a", 0, 0.2, 0, 0.2), Scored("a", 1, 0.4, 0, 0.4), Scored("a", 2, 0.4, 0, 0.4),
         Scored("b", 0, 0.0, 0, 0.0), Scored("c", 0, -0.2, 0, -0.2), Scored("c", 1, 0.2, 0, 0.2)]
    best = select_winners(c, "best", 0.0)
    assert [(w.doc_id, w.k) for w in best] == [("a", 1), ("c", 1)]  # ties -> lowest k; b has no gain
    thr = select_winners(c, "threshold", 0.1)
    assert [(w.doc_id, w.k) for w in thr] == [("a", 0), ("a", 1), ("a", 2), ("c", 1)]
    assert reward(0.4, 0.2, 0.0) == 0.4 and reward(0.4, 0.2, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        select_winners(c, "worst", 0.0)


def test_completion_only_loss_masks_every_prompt_token(runtime):
    tok = runtime.student.tokenizer
    pairs = [("Write facts about the river:\n", "The river is long."), ("Q?\n", "A.")]
    seqs, plens = tokenize_pairs(tok, pairs, 64)
    b = collate(seqs, tok.pad_token_id, plens)
    for i, (ids, n) in enumerate(zip(seqs, plens)):
        assert n == len(tok(pairs[i][0], add_special_tokens=False)["input_ids"])
        assert (b.labels[i, :n] == IGNORE).all()  # prompt: no loss
        assert (b.labels[i, n:len(ids)] == torch.tensor(ids[n:])).all()  # completion (+ eos): loss
        assert (b.labels[i, len(ids):] == IGNORE).all()  # padding: no loss
    # a prompt that would fill the window keeps its end and leaves the completion room to carry loss
    long_prompt = "x " * 100
    (ids,), (n,) = tokenize_pairs(tok, [(long_prompt, "y")], 16)
    p_ids = tok(long_prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok("y", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(ids) <= 16 and n == 8 and ids[:n] == p_ids[-8:]
    assert ids[n:] == c_ids[: 16 - n]


def test_teacher_versions_are_immutable_checked_and_tied_to_the_student(runtime, tmp_path):
    from student.stack import CorruptAdapterError, StackError
    from teacher.versions import TeacherStore

    st = runtime.student
    store = TeacherStore(tmp_path / "teachers")
    assert store.current() == 0 and store.get(0) is None and store.load(st, 0) is None
    st.train_adapter([], "t-live", seed=0, pairs=[("prompt\n", "completion")])
    v = store.commit(st, "t-live", 1, 0, 0, "base", 1, 0.5)
    st.drop("t-live")
    assert (v.name, v.student_version, v.round, store.current()) == ("teacher-v1", "base", 0, 1)
    with pytest.raises(StackError):
        store.commit(st, "t-live", 1, 0, 0, "base", 1, 0.5)
    name = store.load(st, 1)
    assert name == "teacher-v1" and name in st.adapters()
    st.drop(name)
    f = next(p for p in store.adapter_dir(1).iterdir() if p.suffix == ".safetensors")
    f.write_bytes(f.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(CorruptAdapterError):
        store.load(st, 1)


def test_rounds_train_teachers_and_a_killed_run_resumes_without_duplicates(runtime, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_overrides(rl={"rounds": 2, "contexts": 2, "samples": 2, "threshold": -1.0,
                                      "selection": "threshold", "train": {"epochs": 1, "rank": 4, "alpha": 8}},
                                  teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 16,
                                           "grounding": {"enabled": False}})  # tiny's text never grounds
    rt = type(runtime)(cfg, runtime.student, runtime.model_name)
    before = set(runtime.student.adapters())
    seen = []

    def die_after_three(c):
        seen.append(c)
        if len(seen) == 3:
            raise KeyboardInterrupt  # killed mid-round

    with pytest.raises(KeyboardInterrupt):
        RestEM(rt, PASSAGES, tmp_path).run(on_candidate=die_after_three)
    assert len((tmp_path / "candidates.jsonl").read_text().splitlines()) == 3
    plan = json.loads((tmp_path / "contexts.json").read_text())  # every round's contexts, known up front
    assert sorted(plan) == ["0", "1"] and all(len(ids) == 2 for ids in plan.values())
    runtime.student.drop("rl-candidate")
    rounds = RestEM(rt, PASSAGES, tmp_path).run()
    rows = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    keys = [(r["round"], r["doc_id"], r["k"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2  # every candidate measured exactly once
    assert [r["round"] for r in rounds] == [0, 1] and [r["teacher"] for r in rounds] == [0, 1]
    assert [r["new_teacher"] for r in rounds] == [1, 2] and rounds[0]["winners"] == 4
    assert all(r["units"] for r in rows) and rounds[0]["empty_after_guard"] == 0
    assert {r["teacher"] for r in rows if r["round"] == 1} == {1}  # round 1 sampled from teacher-v1
    assert all(r["seconds"]["train"] > 0 and "overhead" in r["seconds"] for r in rows)
    # a finished run does nothing more
    assert RestEM(rt, PASSAGES, tmp_path).run() == rounds
    for n in set(runtime.student.adapters()) - before:
        runtime.student.drop(n)


def test_a_winner_teaches_only_what_the_guard_kept():
    from teacher.rl.rest_em import completion_text
    from teacher.parse import parse_self_edit

    c = {"raw": "- Paris is in France.\n- The moon is cheese.", "units": ["Paris is in France."]}
    kept = completion_text(c, "kept", "implications")
    assert "cheese" not in kept and parse_self_edit(kept, "implications") == c["units"]  # it parses back
    assert completion_text(c, "raw", "implications") == c["raw"]
    qa = {"raw": "junk", "units": ["Question: Where is Paris?\nAnswer: France", "Question: Who?\nAnswer: Me"]}
    assert parse_self_edit(completion_text(qa, "kept", "self-qa"), "self-qa") == qa["units"]
    assert completion_text({"raw": "x", "units": []}, "kept", "implications") == "x"


def test_cli_train_heldout_eval_and_report(tiny_config_file, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    run = tmp_path / "rl"
    sets = ["--set", "rl.threshold=-1", "--set", "rl.train.epochs=1", "--set", "teacher.max_new_tokens=16",
            "--set", "teacher.grounding.enabled=false"]
    cli = CliRunner()
    r = cli.invoke(app, ["rl", "--passages", str(ROOT / "examples/passages.json"), "--rounds", "1", "--contexts",
                         "2", "--samples", "2", "--out", str(run), "-c", str(tiny_config_file), *sets])
    assert r.exit_code == 0, r.output
    assert "round 0: teacher-v0" in r.output and "-> teacher-v1" in r.output
    r = cli.invoke(app, ["rl", "eval", str(run), "--passages", str(ROOT / "examples/passages.json"),
                         "--sample-only"])
    assert r.exit_code == 0, r.output
    edits = [json.loads(x) for x in (run / "heldout" / "self_edits.jsonl").read_text().splitlines()]
    assert {e.get("condition") for e in edits} == {None, f"teacher:{run}@1"}  # v0's edit and v1's, nothing trained
    assert not (run / "heldout" / "units.jsonl").exists()
    r = cli.invoke(app, ["rl", "eval", str(run), "--passages", str(ROOT / "examples/passages.json")])
    assert r.exit_code == 0, r.output
    again = [json.loads(x) for x in (run / "heldout" / "self_edits.jsonl").read_text().splitlines()]
    assert again == edits  # the evaluation measured the stored edits: no teacher was sampled again
    summary = json.loads((run / "heldout" / "summary.json").read_text())
    assert summary["passages"] == 1  # the two training contexts are excluded
    assert f"teacher:{run}@1 - self-edit" in summary["paired"]
    units = [json.loads(x) for x in (run / "heldout" / "units.jsonl").read_text().splitlines()]
    by = {u["condition"]: u for u in units}
    # step-matched control: the passage repeated to the round-0 self-edit's optimizer steps
    assert by["passage-repeat"]["train"]["steps"] == by["self-edit"]["train"]["steps"]
    assert all("canary_drop" in u and "drift" in u for u in units)  # each condition's general cost
    bad = cli.invoke(app, ["rl", "eval", str(run), "--passages", str(ROOT / "examples/passages.json"),
                           "--regime", "product"])
    assert bad.exit_code == 2 and "train.retain.weight is 0" in bad.output
    r = cli.invoke(app, ["rl", "report", str(run)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1].startswith("RESULT round0=")
    assert " vs_repeat=" in r.output.strip().splitlines()[-1]  # the step-matched control in the verdict
    assert (run / "heldout" / "accuracy_vs_round.png").stat().st_size > 1000
    bad = cli.invoke(app, ["rl", "--passages", str(tmp_path / "none.json"), "-c", str(tiny_config_file)])
    assert bad.exit_code == 2
    bad = cli.invoke(app, ["rl", "report", str(tmp_path)])
    assert bad.exit_code == 2
    bad = cli.invoke(app, ["eval", "--passages", str(ROOT / "examples/passages.json"), "--conditions",
                           f"teacher:{run}@7", "-c", str(tiny_config_file)])
    assert bad.exit_code == 2 and "no teacher-v7" in bad.output


def test_online_rl_keeps_the_best_candidate_and_retrains_the_teacher(runtime, tiny_cfg, tmp_path):
    from agent.continual import ContinualLearner
    from memory.store import MemoryStore
    from student.stack import StackStore

    docs = [passage_from_dict({"title": f"Doc {i}", "context": f"Station {i} of the Quarn line is painted "
                                                                f"colour {i * 7} since {1900 + i}.",
                               "questions": [{"question": f"What colour is station {i}?", "answer": str(i * 7)}]})
            for i in range(8)]
    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "self-edit"},
        teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12, "grounding": {"enabled": False}},
        rl={"threshold": -1.0, "train": {"epochs": 1, "rank": 4, "alpha": 8},
            "online": {"samples": 2, "retrain_every": 2, "holdout_every": 2, "holdout_docs": 2,
                       "min_improvement": -1.0}})
    st = runtime.student
    before = set(st.adapters())
    lr = ContinualLearner(st, cfg, StackStore(tmp_path / "state" / "stack"), MemoryStore(tmp_path / "m.sqlite"))
    docs.sort(key=lambda d: not lr.online.held_back(d.doc_id))  # held-back documents first: a judge exists
    assert lr.online.held_back(docs[0].doc_id) and not lr.online.held_back(docs[-1].doc_id)
    results = [lr.learn(d) for d in docs]
    assert all(r.status == "promoted" and len(r.candidates) == 2 for r in results)
    for d in docs:
        rows = lr.memory.samples(d.doc_id)
        assert [r["k"] for r in rows] == [0, 1] and sum(r["chosen"] for r in rows) == 1
        assert all(r["gain"] is not None for r in rows)
    updates = [r.teacher for r in results if r.teacher]
    assert updates, "no teacher retraining happened"
    assert all(u["winners"] >= 2 for u in updates if u["version"])
    assert any(u["promoted"] for u in updates), [u["reason"] for u in updates]
    assert lr.online.store.current() >= 1
    held = [d for d in docs if lr.online.held_back(d.doc_id)]
    trained_on = {r["doc_id"] for r in lr.memory.samples() if r["trained_into"] not in (None, -1)}
    assert not trained_on & {d.doc_id for d in held}  # held-back documents never train the teacher
    first = next(i for i, r in enumerate(results) if r.teacher and r.teacher["promoted"])
    later = docs[first + 1:]
    assert later, "the teacher was first promoted on the last document: nothing shows it is used"
    assert all(r["teacher"] >= 1 for d in later for r in lr.memory.samples(d.doc_id))  # sampled from the new one
    for n in set(st.adapters()) - before:
        st.drop(n)
    st.restore_base()


def test_a_separate_teacher_model_learns_while_the_student_only_evaluates(tiny_cfg, tmp_path):
    from student.runtime import open_runtime

    cfg = tiny_cfg.with_overrides(
        teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12, "model": tiny_cfg.model.model_dump(),
                 "grounding": {"enabled": False}},
        rl={"rounds": 1, "contexts": 2, "samples": 2, "threshold": -1.0, "train": {"epochs": 1, "rank": 4,
                                                                                  "alpha": 8}})
    rt = open_runtime(cfg)
    assert rt.teacher is not rt.student and rt.teacher.base is not rt.student.base
    [summary] = RestEM(rt, PASSAGES, tmp_path).run()
    assert summary["new_teacher"] == 1
    from teacher.versions import TeacherStore

    store = TeacherStore(tmp_path / "teachers")
    assert store.versions() == [1]
    name = store.load(rt.teacher, 1)  # verified on load; it must change what the teacher's model says
    ids = torch.tensor([rt.teacher.tokenizer("Station 3 of the Quarn line")["input_ids"]])
    with torch.inference_mode():
        with rt.teacher.use(None) as m:
            base = m(input_ids=ids).logits
        with rt.teacher.use(name) as m:
            tuned = m(input_ids=ids).logits
    assert not torch.allclose(base, tuned, atol=1e-5)
    assert not [a for a in rt.student.adapters() if a.startswith("teacher")]  # nothing of the teacher's here


def test_online_retention_aware_reward_prefers_the_candidate_that_forgets_less(runtime, tiny_cfg, tmp_path,
                                                                              monkeypatch):
    """Candidate 0 gains more on the new document but wipes out an earlier one; with lambda > 0 the agent
    keeps candidate 1, and the stored sample rewards are gain - lambda x forgetting. Both terms are recorded
    per candidate at any lambda, so a run can be audited for what another lambda would have kept."""
    from agent.continual import ContinualLearner
    from memory.store import MemoryStore
    from student.stack import StackStore

    new, old = PASSAGES[0], PASSAGES[1]
    st = runtime.student
    before = set(st.adapters())
    for lam, want in ((0.0, 0), (1.0, 1)):
        cfg = tiny_cfg.with_overrides(rl={"retention_lambda": lam, "retention_docs": 1})
        lr = ContinualLearner(st, cfg, StackStore(tmp_path / f"s{lam}"), MemoryStore(tmp_path / f"m{lam}.sqlite"))
        lr.memory.put_samples(new.doc_id, 0, ["a", "b"])
        monkeypatch.setattr(lr, "_retention_probes", lambda learned, v: [(old, 0.8)])
        scripted = {("c0", new.title): 0.6, ("c0", old.title): 0.0, ("c1", new.title): 0.4, ("c1", old.title): 0.8}
        monkeypatch.setattr(lr, "accuracy", lambda names, doc: scripted[(names[-1][-2:], doc.title)])
        cands = [(0, "a", [new.context]), (1, "b", [new.context])]
        name, _, gains, terms = lr._best_candidate(new, cands, "x", [], [], 0.2, seed=0, learned=[old.doc_id])
        assert name == f"x-c{want}", lam
        assert gains == pytest.approx([0.6 - 0.2, 0.4 - 0.2] if not lam else [0.6 - 0.2 - 0.8, 0.4 - 0.2])
        assert [(t["k"], t["forgetting"], t["guarded_docs"]) for t in terms] == [(0, 0.8, 1), (1, 0.0, 1)]
        assert [t["gain"] for t in terms] == pytest.approx([0.4, 0.2])
        assert [r["gain"] for r in lr.memory.samples(new.doc_id)] == pytest.approx(gains)
        st.drop(name)
    assert set(st.adapters()) == before


def test_the_teacher_retrains_outside_the_update_lock_and_once_at_a_time(runtime, tiny_cfg, tmp_path, monkeypatch):
    """Retraining used to hold the stack's update lock (every other update waited, with no timeout)."""
    import threading

    from agent.continual import ContinualLearner
    from memory.store import MemoryStore
    from student.stack import StackError, StackStore

    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "self-edit"},
        teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12, "grounding": {"enabled": False}},
        rl={"threshold": -1.0, "train": {"epochs": 1, "rank": 4, "alpha": 8},
            "online": {"samples": 2, "retrain_every": 1, "holdout_every": 1000, "min_improvement": -1.0}})
    st = runtime.student
    before = set(st.adapters())
    lr = ContinualLearner(st, cfg, StackStore(tmp_path / "state" / "stack"), MemoryStore(tmp_path / "m.sqlite"))
    seen = []

    def retrain():
        other = StackStore(tmp_path / "state" / "stack", update_timeout_s=1.0)
        free = []

        def probe():
            try:
                with other.updating():
                    free.append(True)
            except StackError:
                free.append(False)

        t = threading.Thread(target=probe)
        t.start()
        t.join(60)
        seen.append(free == [True])
        return None

    monkeypatch.setattr(lr.online, "_retrain", retrain)
    try:
        r = lr.learn(PASSAGES[0])
        assert r.status == "promoted" and seen == [True]  # retraining ran, and another update could start
        with lr.online.store.retraining() as mine:  # another process is retraining: this one skips, not waits
            assert mine and lr.online.maybe_retrain() is None and seen == [True]
    finally:
        for n in set(st.adapters()) - before:
            st.drop(n)
        st.restore_base()


def test_online_candidates_train_and_score_as_the_update_would(runtime, tiny_cfg, tmp_path, monkeypatch):
    """Online-RL candidates compete to become the update: each trains with the update's settings and retention
    targets, and is scored routed (as the gate scores the committed version), not unrouted and plain."""
    from agent.continual import ContinualLearner
    from memory.store import MemoryStore
    from serving.routing import AdapterRouting
    from student.stack import StackStore

    docs = [passage_from_dict({"title": f"Doc {i}", "context": f"Station {i} of the Quarn line is painted "
                                                                f"colour {i * 7} since {1900 + i}.",
                               "questions": [{"question": f"What colour is station {i} of the Quarn line?",
                                              "answer": str(i * 7)}]}) for i in range(2)]
    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "self-edit",
                   "routing": {"enabled": True, "quantile": 0.98, "min_score": 0.05},
                   "canary": {**tiny_cfg.continual.canary.model_dump(), "enabled": False}},
        teacher={**tiny_cfg.teacher.model_dump(), "max_new_tokens": 12, "grounding": {"enabled": False}},
        train={**tiny_cfg.train.model_dump(), "epochs": 2},
        rl={"threshold": -1.0, "online": {"samples": 2, "retrain_every": 100, "holdout_every": 1000,
                                          "min_improvement": -1.0}})
    st = runtime.student
    lr = ContinualLearner(st, cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "m.sqlite"))
    calls, scored = [], []
    real_train, real_acc = st.train_adapter, lr.accuracy
    monkeypatch.setattr(st, "train_adapter", lambda *a, **k: calls.append((a[1], k)) or real_train(*a, **k))
    monkeypatch.setattr(lr, "accuracy", lambda target, doc: scored.append(target) or real_acc(target, doc))
    try:
        r = [lr.learn(d) for d in docs][-1]
    finally:
        for n in set(st.adapters()):
            st.drop(n)
    cands = [(n, k) for n, k in calls if "-c" in n]
    assert len(r.candidates) == 2 and len(cands) >= 2
    assert all(k.get("settings") is not None and k["settings"].epochs == 2 for _, k in cands)
    assert all("retain" in k for _, k in cands)  # the learner's retention targets are passed (None when off)
    assert any(isinstance(t, AdapterRouting) for t in scored)  # routed, as served
