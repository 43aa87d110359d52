"""Online ReST-EM: the running agent's own candidates are the teacher's training data.

With `rl.online.samples` K > 1, each incoming document gets K candidate self-edits from the current teacher;
the learner trains each on the current student, measures its gain on the document's probes, and keeps the
best as the update (so users get best-of-K updates at once). Every `retrain_every` documents, the winners
(best candidate per document, gain > rl.threshold) of the documents not held back train a new teacher adapter; it is
promoted only if its self-edits beat the current teacher's on the most recent held-back documents (each a
fresh adapter on the base model, same seeds), otherwise it is kept as a rejected version and the current
teacher stays. Teacher versions live in <state_dir>/teachers.
"""
from __future__ import annotations

import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.config import SealConfig
from core.documents import Passage
from evaluation.closed_book import evaluate_passage
from memory.store import MemoryStore
from student.generation import SamplingParams, generate, render_prompt
from teacher.prompts import self_edit_prompt
from teacher.rewards import Scored, select_winners
from teacher.rl.candidates import seed_of
from teacher.rl.improve import teacher_train_settings, train_teacher_version
from teacher.self_edit import build_self_edit
from teacher.versions import TeacherStore


@dataclass
class TeacherUpdate:
    version: int
    promoted: bool
    new_score: float
    old_score: float
    winners: int
    holdout: int
    reason: str

    def to_json(self) -> dict:
        return dict(self.__dict__)



class OnlineTeacher:
    def __init__(self, teacher, cfg: SealConfig, memory: MemoryStore, root: Path, student=None):
        self.teacher_st, self.cfg, self.memory = teacher, cfg, memory
        self.student = student or teacher  # judged on the student; written and trained on the teacher
        self.s = cfg.rl.online
        self.store = TeacherStore(root)

    @property
    def enabled(self) -> bool:
        return self.s.samples > 1 and self.cfg.continual.train_on == "self-edit"

    def held_back(self, doc_id: str) -> bool:
        return int(doc_id[:8], 16) % self.s.holdout_every == 0

    @contextmanager
    def teacher(self, version: int | None = None):
        """The teacher model: the untouched base plus the teacher adapter of `version` (default: current)."""
        if self.teacher_st.merged:
            self.teacher_st.restore_base()
        name = self.store.load(self.teacher_st, self.store.current() if version is None else version)
        with self.teacher_st.use(name) as m:
            yield m

    def sample(self, doc: Passage, k: int, seed: int, version: int | None = None) -> list[str]:
        t = self.cfg.teacher
        params = SamplingParams(max_new_tokens=t.max_new_tokens, temperature=max(t.temperature, 1e-3),
                                top_p=t.top_p, repetition_penalty=t.repetition_penalty, n=k)
        with self.teacher(version) as m:
            return generate(m, self.teacher_st.tokenizer, [self_edit_prompt(doc, t.format)], params, batch_size=1,
                            seed=seed)[0]

    def candidates(self, doc: Passage, seed: int) -> list[tuple[int, str, list[str]]]:
        """(k, raw, training sequences) for each candidate; sampled once per document, then reused."""
        if not self.memory.samples(doc.doc_id):
            self.memory.put_samples(doc.doc_id, self.store.current(), self.sample(doc, self.s.samples, seed))
        out = []
        for row in self.memory.samples(doc.doc_id):
            se = build_self_edit(doc, [row["raw"]], self.cfg.teacher.format, self.cfg.teacher.grounding)
            out.append((row["k"], row["raw"], se.sequences(doc, self.cfg.train.passage_in_training)))
        return out

    # -- retraining ----------------------------------------------------------------------------------------------
    def due(self) -> bool:
        fresh = {r["doc_id"] for r in self.memory.samples() if r["gain"] is not None and r["trained_into"] is None
                 and not self.held_back(r["doc_id"])}
        return len(fresh) >= self.s.retrain_every

    def maybe_retrain(self) -> TeacherUpdate | None:
        if not self.enabled or not self.due():
            return None
        with self.store.retraining() as mine:
            return self._retrain() if mine else None  # another process is retraining on these winners

    def _retrain(self) -> TeacherUpdate | None:
        rows = [r for r in self.memory.samples() if r["gain"] is not None and r["trained_into"] is None]
        train_rows = [r for r in rows if not self.held_back(r["doc_id"])]
        # the candidate the learner kept for each document wins if its gain beats the threshold (the shared rule,
        # teacher/rewards.py); an emptied self-edit taught nothing of the teacher's, so it cannot win
        kept = [r for r in train_rows if r["chosen"] and self._units(r)]
        picked = {(w.doc_id, w.k) for w in select_winners(
            [Scored(r["doc_id"], r["k"], r["gain"], 0.0, r["gain"]) for r in kept], "threshold", self.cfg.rl.threshold)}
        winners = [r for r in kept if (r["doc_id"], r["k"]) in picked]
        docs = sorted({r["doc_id"] for r in train_rows})
        version = max(self.store.versions(), default=0) + 1
        current = self.store.current()
        if not winners:
            self.memory.mark_samples_trained(docs, -1)
            return TeacherUpdate(current, False, float("nan"), float("nan"), 0, 0,
                                 f"no winning candidate among {len(docs)} documents; teacher-v{current} stays")
        pairs = []
        for r in winners:
            p = self.memory.document(r["doc_id"])
            pairs.append((render_prompt(self.teacher_st.tokenizer, self_edit_prompt(p, self.cfg.teacher.format)),
                          r["raw"]))
        train_teacher_version(self.teacher_st, self.store, pairs, version, current, -1, "online", float("nan"),
                              teacher_train_settings(self.cfg.rl.train),
                              seed_of(self.cfg.seed, "online-teacher", version))
        self.store.set_current(current)  # committed, not promoted yet
        self.memory.mark_samples_trained(docs, version)
        holdout = self._holdout()
        if not holdout:
            return TeacherUpdate(version, False, float("nan"), float("nan"), len(pairs), 0,
                                 "no held-back documents with probes yet to judge it; not promoted")
        new = statistics.mean(self._score(version, d) for d in holdout)
        old = statistics.mean(self._score(current, d) for d in holdout)
        promoted = new > old + self.s.min_improvement
        if promoted:
            self.store.set_current(version)
        reason = (f"teacher-v{version} {'beats' if promoted else 'does not beat'} teacher-v{current} on "
                  f"{len(holdout)} held-back documents: {new:.3f} vs {old:.3f}")
        return TeacherUpdate(version, promoted, new, old, len(pairs), len(holdout), reason)

    def _units(self, row: dict) -> int:
        doc = self.memory.document(row["doc_id"])
        return len(build_self_edit(doc, [row["raw"]], self.cfg.teacher.format, self.cfg.teacher.grounding).units)

    def _holdout(self) -> list[Passage]:
        learned = list(self.memory.learned_at())
        held = [d for d in learned if self.held_back(d)][-self.s.holdout_docs:]
        docs = [self.memory.document(d) for d in held]
        return [d for d in docs if d.questions]

    def _score(self, version: int, doc: Passage) -> float:
        """One self-edit from teacher `version` (seeded by the document), a fresh adapter on the base, accuracy."""
        raw = self.sample(doc, 1, seed_of(self.cfg.seed, "holdout", doc.doc_id), version)
        se = build_self_edit(doc, raw, self.cfg.teacher.format, self.cfg.teacher.grounding)
        name = "teacher-judge"
        if self.student.merged:
            self.student.restore_base()  # judged as a fresh adapter on the untouched student
        self.student.train_adapter(se.sequences(doc, self.cfg.train.passage_in_training), name,
                                   seed=seed_of(self.cfg.seed, "judge", doc.doc_id))
        try:
            g = evaluate_passage(self.student, name, doc, self.cfg.eval.max_new_tokens, self.cfg.eval.batch_size)
        finally:
            self.student.drop(name)
        return sum(x.contains for x in g) / len(g)
