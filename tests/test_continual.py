"""The continual learner on the tiny model: versions, ledger, gate, merge baseline, consolidation."""
import pytest
import torch

from agent.continual import ContinualLearner, forgetting_report
from core.documents import passage_from_dict
from memory.store import MemoryStore
from student.stack import StackStore

DOCS = [passage_from_dict({"title": f"Doc {i}", "context": c, "questions": [{"question": q, "answer": a}]})
        for i, (c, q, a) in enumerate([
            ("The Zorblax river flows into the Quimby sea near Frell.", "Where does the Zorblax flow?", "Quimby sea"),
            ("Anna Berg painted the northern harbour in winter.", "Who painted the harbour?", "Anna Berg"),
            ("Carl Olsen repaired the old lighthouse on Monday.", "Who repaired the lighthouse?", "Carl Olsen"),
        ])]


@pytest.fixture()
def learner(runtime, tiny_cfg, tmp_path):
    def make(**continual):
        cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", **continual})
        st = runtime.student
        before = set(st.adapters())
        lr = ContinualLearner(st, cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "mem.sqlite"))
        made.append((st, before))
        return lr

    made = []
    yield make
    for st, before in made:
        for n in set(st.adapters()) - before:
            st.drop(n)
        st.restore_base()  # the session's shared model must leave as it came


def test_stream_builds_versions_and_a_ledger(learner):
    lr = learner()
    lr.measure_base(DOCS)
    results = [lr.learn(d) for d in DOCS]
    assert [r.version for r in results] == [1, 2, 3] and all(r.status == "promoted" for r in results)
    assert lr.stack.aliases() == {"latest": 3, "prod": 3}
    assert [len(lr.stack.manifest(v).adapters) for v in (1, 2, 3)] == [1, 2, 3]
    assert results[2].replayed_docs == 2
    rep = forgetting_report(lr.memory)
    assert rep.versions == [1, 2, 3] and len(rep.docs) == 3
    assert rep.matrix[0][1] is None and all(x is not None for x in rep.matrix[2])
    assert set(rep.base) == {d.doc_id for d in DOCS}


def test_gate_rejects_and_keeps_prod(learner, runtime, tiny_cfg, tmp_path):
    """The gate compares the measured gain with min_gain: the same update is promoted with the bar at its gain and
    rejected with the bar just above it (a bar no update can reach would not test the decision)."""
    def update(min_gain, where):
        cfg = tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "train_on": "passage",
                                                 "gate": {"enabled": True, "min_gain": min_gain,
                                                          "max_forgetting": 0.05}})
        lr = ContinualLearner(runtime.student, cfg, StackStore(tmp_path / where / "stack"),
                              MemoryStore(tmp_path / where / "mem.sqlite"))
        try:
            return lr, lr.learn(DOCS[0], seed=5)
        finally:
            for n in runtime.student.adapters():
                runtime.student.drop(n)

    _, at = update(-1.0, "probe")
    _, ok = update(at.gain, "at")
    assert ok.status == "promoted" and ok.gain == at.gain  # same seed, same update
    lr, r = update(at.gain + 0.01, "above")
    assert r.status == "rejected" and "gain" in r.reason
    # the refused candidate keeps its own name (student-v1, listed with its reason) and no alias serves it:
    # neither prod nor latest, which names the newest promoted version only
    assert lr.stack.aliases() == {} and lr.stack.versions() == [1]
    assert lr.memory.updates()[0]["status"] == "rejected" and lr.memory.learned_at() == {}


def test_exact_consolidation_keeps_the_function(learner):
    from student.stack import load_version

    lr = learner(consolidation={"every": 0, "max_depth": 2, "rank": None, "into": "adapter"})
    results = [lr.learn(d) for d in DOCS]
    assert [r.consolidated_to for r in results] == [None, None, 4]  # v3 holds 3 adapters > 2 -> fold into v4
    folded = lr.stack.resolve("prod")
    assert folded.version == 4 and len(folded.adapters) == 1 and folded.adapters[0].kind == "consolidated"
    assert folded.adapters[0].rank == 3 * lr.cfg.train.rank
    assert set(folded.doc_ids) == {d.doc_id for d in DOCS}
    assert lr.memory.updates()[-1]["status"] == "consolidated"
    ids = lr.student.tokenizer(["The Zorblax river flows into the Quimby sea"], return_tensors="pt")
    with lr.student.use(load_version(lr.stack, lr.student, lr.stack.manifest(3))) as m, torch.no_grad():
        want = m(**ids).logits
    with lr.student.use(load_version(lr.stack, lr.student, folded)) as m, torch.no_grad():
        got = m(**ids).logits
    assert torch.allclose(got, want, atol=1e-4)


def test_consolidation_into_the_base_serves_without_adapters_and_rolls_back_exactly(learner):
    from agent.continual import remove_document
    from student.stack import load_version

    lr = learner(consolidation={"every": 1, "max_depth": 8, "rank": None, "into": "base"})
    ids = lr.student.tokenizer(["Anna Berg painted the northern harbour"], return_tensors="pt")

    def logits(version):
        names = load_version(lr.stack, lr.student, lr.stack.manifest(version))
        with lr.student.use(names or None) as m, torch.no_grad():
            return names, m(**ids).logits

    with lr.student.use(None) as m, torch.no_grad():
        bare = m(**ids).logits
    r1, r2 = lr.learn(DOCS[0]), lr.learn(DOCS[1])
    assert (r1.version, r1.consolidated_to, r2.version, r2.consolidated_to) == (1, 2, 3, 4)
    prod = lr.stack.resolve("prod")
    assert prod.version == 4 and all(a.merged for a in prod.adapters) and len(prod.adapters) == 2
    assert lr.student.adapters() == [] and lr.student.merged == tuple(a.id for a in prod.adapters)
    names, served = logits(4)
    assert names == []  # queries on prod run the bare architecture: no LoRA matmul at all
    names3, stacked = logits(3)  # v3 = v2's merged adapter + doc 1's live adapter
    assert names3 == [prod.adapters[1].id]
    assert torch.allclose(served, stacked, atol=1e-4)
    assert not torch.allclose(served, bare, atol=1e-3)
    _, again = logits(4)
    assert torch.allclose(again, served, atol=1e-5)
    # removing a merged document rebuilds the base without it; the untouched base comes back exactly
    new, changes = remove_document(lr, DOCS[1].doc_id)
    assert [a.doc_ids for a in new.adapters] == [(DOCS[0].doc_id,)] and set(changes) == {d.doc_id for d in DOCS[:2]}
    lr.student.restore_base()
    with lr.student.use(None) as m, torch.no_grad():
        assert torch.equal(m(**ids).logits, bare)


def test_merge_baseline_changes_the_weights_and_keeps_no_adapters(tiny_cfg, tmp_path):
    from student.runtime import open_runtime

    cfg = tiny_cfg.with_overrides(continual={"train_on": "passage", "merge_each_update": True})
    st = open_runtime(cfg).student  # its own copy: merging is irreversible
    lr = ContinualLearner(st, cfg, StackStore(tmp_path / "stack"), MemoryStore(tmp_path / "mem.sqlite"))
    w = next(p for n, p in st.base.named_parameters() if n.endswith("q_proj.weight"))
    w0 = w.detach().clone()
    results = [lr.learn(d) for d in DOCS[:2]]
    assert all(not lr.stack.manifest(r.version).adapters for r in results)
    assert not torch.equal(w0, w) and results[1].replayed_docs == 1 and st.adapters() == []


def test_an_update_interrupted_after_commit_is_finished_without_retraining(learner):
    """A redelivered job: the first run dies after the adapter was committed; the rerun evaluates that same
    version instead of training a duplicate, and a third run returns the recorded result untouched."""
    lr = learner()
    lr.learn(DOCS[0])
    seen = []

    def die_at_evaluating(stage):
        seen.append(stage)
        if stage == "evaluating":
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        lr.learn(DOCS[1], on_stage=die_at_evaluating)
    assert seen == ["writing_probes", "self_editing", "training", "evaluating"]
    assert lr.stack.versions() == [1, 2] and lr.stack.aliases()["prod"] == 1  # committed, not promoted
    adapters = sorted(p.name for p in (lr.stack.root / "adapters").iterdir())
    stages = []
    r = lr.learn(DOCS[1], on_stage=stages.append)
    assert (r.version, r.status, r.replayed) == (2, "promoted", False)
    assert "training" in stages and lr.stack.versions() == [1, 2] and lr.stack.aliases()["prod"] == 2
    assert sorted(p.name for p in (lr.stack.root / "adapters").iterdir()) == adapters  # no duplicate adapter
    assert [a.doc_ids for a in lr.stack.manifest(2).adapters] == [(DOCS[0].doc_id,), (DOCS[1].doc_id,)]
    # a delivery of the same update after it finished (same document, same parent): the recorded outcome
    lr.stack.set_alias("prod", 1)
    again = lr.learn(DOCS[1])
    assert (again.version, again.status, again.replayed) == (2, "promoted", True)
    assert again.after == r.after and lr.stack.versions() == [1, 2]


def test_a_rollback_made_during_an_update_is_not_undone_by_it(learner):
    """An operator rolls prod back (taking only the stack's writer lock) while an update is evaluating: the update
    used to promote over it. Now it finds prod moved and does not promote; prod stays where the operator put it."""
    lr = learner()
    assert lr.learn(DOCS[0]).status == "promoted" and lr.learn(DOCS[1]).status == "promoted"

    def operator(stage: str) -> None:
        if stage == "evaluating":
            with lr.stack.writer():
                lr.stack.set_alias("prod", 1)

    r = lr.learn(DOCS[2], on_stage=operator)
    assert r.status == "rejected" and "prod moved from student-v2 to student-v1" in r.reason, r.reason
    assert lr.stack.aliases()["prod"] == 1 and DOCS[2].doc_id not in lr.memory.learned_at()
    assert lr.memory.updates()[-1]["status"] == "rejected"
    again = lr.learn(DOCS[2])  # submitted again: learned on the operator's prod
    assert again.status == "promoted" and lr.stack.manifest(again.version).parent == 1


def test_a_document_whose_probes_the_untouched_model_already_answers_is_kept_not_refused_for_no_gain():
    """Self-written probes the untouched model answers in full leave no room to show a gain: refusing such a
    document for 'gain +0.00' threw away what it teaches beyond them (2 of the 3 refusals of the 4x8 protocol)."""
    from agent.continual import gate_decision
    from core.config import GateSettings

    g = GateSettings(enabled=True, min_gain=0.01, max_forgetting=0.05, max_canary_drop=0.02)
    status, reason = gate_decision(g, before=1.0, after=1.0, forgetting=0.0, has_probes=True, canary_drop=0.0,
                                   drift=0.0)
    assert status == "promoted" and "already answered" in reason
    # the keep checks still apply, and the probes must stay answered
    assert gate_decision(g, 1.0, 0.8, 0.0, True, 0.0, 0.0)[0] == "rejected"
    assert gate_decision(g, 1.0, 1.0, 0.0, True, 0.05, 0.0)[1].startswith("canary drop")
    assert gate_decision(g, 1.0, 1.0, 0.2, True, 0.0, 0.0)[1].startswith("forgetting")
    # below saturation nothing changed: no gain is still refused
    status, reason = gate_decision(g, before=0.8, after=0.8, forgetting=0.0, has_probes=True)
    assert status == "rejected" and reason.startswith("gain +0.00")
    assert gate_decision(g, 0.2, 0.6, 0.0, True) == ("promoted", "")
