"""The continual student: learn documents one after another as stacked adapters, watch for forgetting.

One update (one document):
  probes     given QA, or teacher-written probes checked in context (documents without QA)
  before     the document's probe accuracy on the current prod version (the pre-update baseline)
  train      a new adapter on the self-edit (+ replayed sequences of earlier documents), with every older
             adapter of the stack active and frozen
  commit     a new immutable version (latest moves)
  monitor    the new document's probes and past documents' probes (all, or nearest by faiss + random) on the
             new version -> ledger R[version][document]
  gate       promote to prod if gain >= min_gain and forgetting <= max_forgetting; else keep it as a rejected
             candidate with the reason (the next update builds on prod, not on the rejected one)
  fold       by policy, fold the stack into one adapter (a new version with the same documents)
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from core.config import SealConfig
from core.documents import QA, Passage
from evaluation.closed_book import evaluate_passage
from memory.store import MemoryStore
from student.adapters import Student
from student.consolidate import fold
from student.stack import AdapterRef, Manifest, StackStore, load_version
from teacher.rewards import reward
from teacher.self_edit import build_self_edit
from teacher.writer import TeacherWriter


@dataclass
class UpdateResult:
    doc_id: str
    version: int
    parent: int
    status: str  # promoted | rejected
    reason: str
    before: float
    after: float
    forgetting: float
    replayed_docs: int
    probes: int
    probe_source: str
    seconds: dict = field(default_factory=dict)
    consolidated_to: int | None = None
    replayed: bool = False  # True when this update had already been done (a redelivered job): nothing re-ran
    candidates: list[float] | None = None  # online RL: each candidate self-edit's reward (the best was kept)
    candidate_terms: list[dict] | None = None  # online RL: each candidate's gain and forgetting, the reward's terms
    teacher: dict | None = None  # online RL: a teacher retraining that followed this update
    canary: float | None = None  # general-capability canary accuracy of this version
    canary_base: float | None = None  # ... of the untouched model (the budget is cumulative against it)
    drift: float | None = None  # KL(base || this version) on neutral prompts, nats per token
    attempts: list[dict] | None = None  # earlier tries of this update the gate refused (gentler each time)

    @property
    def gain(self) -> float:
        return self.after - self.before

    @property
    def canary_drop(self) -> float | None:
        return None if self.canary is None or self.canary_base is None else self.canary_base - self.canary

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("replayed")
        return d

    @classmethod
    def from_json(cls, d: dict) -> "UpdateResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class _Update:
    """What one update carries from stage to stage (see ContinualLearner.learn)."""

    seed: int
    stage: Callable[[str], None]
    t0: float = field(default_factory=time.perf_counter)
    t_probe: float = 0.0
    t_edit: float = 0.0
    doc: Passage | None = None
    probes: list = field(default_factory=list)
    source: str = ""
    texts: list[str] = field(default_factory=list)
    cands: list | None = None
    parent: Manifest | None = None
    parent_v: int = 0
    learned: list[str] = field(default_factory=list)
    attempt: Manifest | None = None
    before: float = float("nan")
    replay: list[str] = field(default_factory=list)
    settings: object = None  # TrainSettings; the learner's own until a refused try makes it gentler
    scale: float = 1.0
    m: Manifest | None = None
    names: list[str] = field(default_factory=list)
    forgetting: float = 0.0
    res: UpdateResult | None = None


def _score(graded) -> float:
    """Probe accuracy of graded replies (the ledger's figure)."""
    return sum(g.contains for g in graded) / len(graded) if graded else float("nan")


def _replies(graded) -> list[dict]:
    """What the ledger keeps of a version's replies beside the figure (MemoryStore.record's `answers`)."""
    return [{"question": g.question, "reply": g.answer, "correct": bool(g.contains)} for g in graded]


def _latest(ledger: dict[int, dict[str, float]], doc: str, at_or_before: int) -> float | None:
    """The most recent measurement of `doc` in a version <= `at_or_before` (folds add no ledger rows)."""
    for v in sorted((v for v in ledger if v <= at_or_before), reverse=True):
        if doc in ledger[v]:
            return ledger[v][doc]
    return None


def advance_latest(stack, version: int) -> None:
    """`latest` follows promotions (never a candidate the gate has not passed); the caller holds writer()."""
    if (stack.aliases().get("latest") or 0) < version:
        stack.set_alias("latest", version)


def probe_seed(seed: int) -> int:
    """The teacher's probes and its self-edit never share a sample (same prompt under self-qa)."""
    return seed * 1_000_003 + 7_919


class ContinualLearner:
    def __init__(self, student: Student, cfg: SealConfig, stack: StackStore, memory: MemoryStore,
                 teacher: Student | None = None, vllm=None):
        from core.config import learning_config

        cfg = learning_config(cfg)  # the document-learning recipe (continual.recipe) applied
        self.student, self.cfg, self.stack, self.memory = student, cfg, stack, memory
        # backend.kind=vllm: the base teacher's sampling and the probes of committed versions go to the server
        self.vllm = vllm  # serving.vllm_adapters.VLLMAdapters | None
        self.generation = vllm.backend if vllm is not None else None
        self.teacher_st = teacher or student  # a separate teacher base, or the student's own base
        self.c = cfg.continual
        self.writer = TeacherWriter(self.teacher_st.model, self.teacher_st.tokenizer, cfg.teacher)
        self.rng = random.Random(cfg.seed)
        from teacher.rl.online import OnlineTeacher

        self.online = OnlineTeacher(self.teacher_st, cfg, memory, stack.root.parent / "teachers", student)
        self.general = None
        self.routed = self.c.routing.enabled  # each document's adapter alone on the base, applied by routing
        self._routings = None
        if self.routed:
            from serving.routing import RoutingCache

            self._routings = RoutingCache(memory, self.c.routing, self.c.canary)
        self._retain = None  # the untouched model's answers to neutral prompts (retention targets), built once
        # recitations for the canary as served, per (adapter id, part title): a stack adapter never changes, so
        # they hold across versions
        from memory.recitations import RecitationMemo

        # kept in the memory store for committed stack adapters: the server reads them instead of reciting again
        self._recited = RecitationMemo(self.memory, persist=lambda a: self.stack.adapter_dir(a).is_dir())
        if self.c.canary.enabled:
            from evaluation.canary import GeneralMonitor

            self.general = GeneralMonitor(self.c.canary, cfg.train.retain, cfg.model.cache_dir)

    # -- helpers ------------------------------------------------------------------------------------------------
    def prod(self) -> Manifest | None:
        return self.stack.resolve("prod") if "prod" in self.stack.aliases() else None

    def _names(self, m: Manifest | None) -> list[str]:
        if m is None:  # the untouched base
            if self.student.merged:
                self.student.restore_base()
            return []
        return load_version(self.stack, self.student, m)

    def accuracy_of(self, m: Manifest | None, names: list[str]):
        """Probe accuracy for a committed version (or the base): answered by the vLLM server when one is
        configured (the monitor's replay is an update's heaviest generation), else in-process with `names`."""
        if self.vllm is None:
            routing, memo = self.routing(m, names), self.recitations()
            return lambda doc: _score(self.graded(routing or names, doc, memo))
        served = self._served(m, names)

        def acc(doc: Passage) -> float:
            graded = evaluate_passage(self.student, served, doc, self.cfg.eval.max_new_tokens,
                                      self.cfg.eval.batch_size, backend=self.generation)
            return sum(g.contains for g in graded) / len(graded) if graded else float("nan")
        return acc

    def graded_of(self, m: Manifest | None, names: list[str]):
        """As accuracy_of, but each call returns the version's graded replies (evaluation.closed_book.Graded rows), so
        the monitor can keep what the version answered beside the figure."""
        if self.vllm is None:
            routing, memo = self.routing(m, names), self.recitations()
            return lambda doc: self.graded(routing or names, doc, memo)
        served = self._served(m, names)
        return lambda doc: evaluate_passage(self.student, served, doc, self.cfg.eval.max_new_tokens,
                                            self.cfg.eval.batch_size, backend=self.generation)

    def _served(self, m: Manifest | None, names: list[str]):
        """What answers for a committed version on the vLLM server: its folded adapter's name (None: the base),
        or, routed, a ServedRouting that asks the server for each question's own document's adapter."""
        routing = self.routing(m, names)
        if routing is None:
            return self.vllm.ensure(m)
        from serving.routing import ServedRouting

        return ServedRouting(routing, lambda adapter_id: self.vllm.ensure_adapter(m, adapter_id))

    def recitations(self) -> dict:
        """Recitations kept per (stack adapter id, part title line) across versions: a stack adapter never changes
        and greedy decoding of fixed weights always writes the same, so the monitor's replay of past documents
        reads their recitations again instead of writing them again (an update's cost no longer grows with every
        document learned before it)."""
        return self._recited

    def routing(self, m: Manifest | None, names: list[str]):
        """How a version answers in routed mode (serving/routing.py); None when not routed or nothing to route."""
        return self._routings.get(m, names) if self._routings is not None else None

    def accuracy(self, names, doc: Passage) -> float:
        return _score(self.graded(names, doc))

    def graded(self, names, doc: Passage, memo: dict | None = None) -> list:
        """The replies of the student with adapters `names` (or a routing) to the document's probes, graded; with
        serving.answer: recite, routed probes are answered as served: recite, then read."""
        if self.cfg.serving.answer == "recite" and hasattr(names, "adapter_of"):
            from evaluation.closed_book import answer_routed_recite, grade

            qs = [qa.question for qa in doc.questions]
            from teacher.passages import recitation_parts

            answers = answer_routed_recite(self.student, names, qs, lambda d: recitation_parts(self.memory.document(d)),
                                           self.cfg.eval.max_new_tokens, self.cfg.eval.batch_size, memo,
                                           self.cfg.serving.recite_parts)
            return grade(doc, answers, None)
        return evaluate_passage(self.student, names or None, doc, self.cfg.eval.max_new_tokens,
                                self.cfg.eval.batch_size)

    @contextmanager
    def _untouched(self, st: Student):
        """A base model without adapters or merges (load_version redoes the merges afterwards)."""
        if st.merged:
            st.restore_base()
        with st.use(None) as m:
            yield m

    def _teacher(self):
        """The teacher's untouched base (a separate model, or the student's own)."""
        return self._untouched(self.teacher_st)

    def _base(self):
        """The student's untouched base (for embeddings and the ledger's row 0)."""
        return self._untouched(self.student)

    def _probes(self, p: Passage, seed: int) -> tuple[list[QA], str]:
        if p.questions:
            return list(p.questions), "given"
        if not self.c.write_probes:
            return [], "none"
        from teacher.probes import sentence_probes, write_probes

        kept, source = [], "teacher"
        with self._teacher() as m:  # a seed of their own: with format self-qa the self-edit samples the same prompt
            if self.c.probe_writer in ("teacher", "both"):
                kept = write_probes(m, self.teacher_st.tokenizer, p, self.cfg.teacher, probe_seed(seed)).kept
            if self.c.probe_writer == "sentences" or (self.c.probe_writer == "both" and len(kept) < 5):
                more = sentence_probes(m, self.teacher_st.tokenizer, p, probe_seed(seed), 5 - len(kept), kept).kept
                source = "sentences" if not kept else "teacher+sentences" if more else "teacher"
                kept += more
        return kept, source

    def _train_texts(self, p: Passage, seed: int) -> list[str]:
        """The document's training units in the configured regime (agent/training_data.py)."""
        from agent.training_data import document_units, with_masked

        units = document_units(p, self.c, seed)
        if units is not None:
            return units
        if self.generation is not None and self.teacher_st is self.student:  # the base teacher on vLLM
            raw = self.writer.sample_raw([p], seed=seed, backend=self.generation)[0]
        else:
            with self._teacher() as m:
                raw = self.writer.sample_raw([p], seed=seed, model=m)[0]
        se = build_self_edit(p, raw, self.cfg.teacher.format, self.cfg.teacher.grounding)
        return se.sequences(p, self.cfg.train.passage_in_training) + with_masked(p, self.c, seed)

    def _replay(self, learned: list[str]) -> list[str]:
        r = self.c.replay
        if not r.docs or not learned:
            return []
        out = []
        for d in self.rng.sample(learned, min(r.docs, len(learned))):
            seqs = self.memory.sequences(d)
            out += self.rng.sample(seqs, min(r.sequences_per_doc, len(seqs)))
        return out

    def _monitored(self, new_doc: str, learned: list[str]) -> list[str]:
        """Past documents to replay probes for: all, or nearest by faiss + a random sample."""
        b = self.c.monitor.budget
        if b is None or len(learned) <= b:
            return list(learned)
        import faiss
        import numpy as np

        ids, vecs = self.memory.embeddings()
        pos = {d: i for i, d in enumerate(ids)}
        near: list[str] = []
        if new_doc in pos and self.c.monitor.similar:
            cand = [d for d in learned if d in pos]
            index = faiss.IndexFlatIP(vecs.shape[1])
            index.add(np.stack([vecs[pos[d]] for d in cand]))
            _, hits = index.search(vecs[pos[new_doc]][None], min(self.c.monitor.similar, len(cand)))
            near = [cand[i] for i in hits[0] if i >= 0]
        rest = [d for d in learned if d not in near]
        return near + self.rng.sample(rest, max(0, min(b - len(near), len(rest))))

    def measure_base(self, docs: list[Passage]) -> None:
        """Ledger row 0: the untouched model, for the 'above the base model' comparison."""
        for d in docs:
            if d.questions:
                g = self.graded([], d)
                self.memory.record(0, d.doc_id, _score(g) * len(d.questions), len(d.questions), answers=_replies(g))

    # -- one update ---------------------------------------------------------------------------------------------
    def learn(self, passage: Passage, seed: int | None = None,
              on_stage: Callable[[str], None] | None = None, measure_base: bool = False) -> UpdateResult:
        """One document, in stages (`on_stage` hears each: writing_probes, self_editing, training, evaluating, and
        may raise to cancel). Safe to run again after a crash at any point: stored probes and self-edits are
        reused, a committed candidate for the same (document, parent version) is evaluated instead of retrained,
        and a finished update is returned as recorded; so a redelivered job does its work once."""
        u = _Update(seed=self.cfg.seed if seed is None else seed, stage=on_stage or (lambda _name: None),
                    settings=self.cfg.train)
        u.stage("writing_probes")
        self._write_probes(u, passage, measure_base)
        u.stage("self_editing")
        self._write_self_edit(u)
        with self.stack.updating():  # one writer of the stack from reading prod to promoting
            self._read_parent(u)
            done = self._already_done(u)
            if done is not None:
                return done
            self._train_until_accepted(u)  # train (or rescale) -> evaluate -> gate, retried gentler when refused
            self._promote(u)
            self._record(u)
            if u.res.status == "promoted" and not self.c.merge_each_update and not self.routed:
                u.res.consolidated_to = self._maybe_consolidate(u.m)
            u.res.seconds["total"] = round(time.perf_counter() - u.t0, 2)
            self._record(u)
            self._drop_unserved(u.names)
        # the teacher retrains outside the update lock: it writes the teacher store, not the stack, so other
        # documents' updates need not wait for it
        if u.res.status == "promoted" and self.online.enabled:
            tu = self.online.maybe_retrain()
            if tu is not None:
                u.res.teacher = tu.to_json()
                self._record(u)
        return u.res

    # -- the stages of learn(), in order -------------------------------------------------------------------------
    def _write_probes(self, u: "_Update", passage: Passage, measure_base: bool) -> None:
        """The document's probes (given, stored, or teacher-written), its row 0 and its embedding."""
        stored = self.memory.probes(passage.doc_id)
        if stored and not passage.questions:
            u.probes, u.source = [QA(p.question, p.answer) for p in stored], stored[0].source
        else:
            u.probes, u.source = self._probes(passage, u.seed)
        u.doc = doc = Passage(passage.title, passage.context, tuple(u.probes))
        self.memory.add_document(passage, u.probes, u.source)
        if measure_base and u.probes and doc.doc_id not in self.memory.ledger().get(0, {}):
            with self._base():  # ledger row 0: the untouched model on this document (for the audit)
                g = self.graded([], doc)
                self.memory.record(0, doc.doc_id, _score(g) * len(u.probes), len(u.probes), answers=_replies(g))
        if not self.memory.has_embedding(doc.doc_id):
            from student.embedding import embed

            with self._base():
                self.memory.put_embedding(doc.doc_id, embed(self.student, [f"{doc.title}\n{doc.context}"])[0])
        u.t_probe = time.perf_counter()

    def _write_self_edit(self, u: "_Update") -> None:
        """The training text (stored, or written now), or K candidate self-edits when the online teacher is on."""
        from agent.training_data import without_probes

        u.texts = self.memory.sequences(u.doc.doc_id)
        if not u.texts:
            if self.online.enabled and u.probes and not self.c.merge_each_update:
                u.cands = [(k, raw, without_probes(texts, u.probes))
                           for k, raw, texts in self.online.candidates(u.doc, u.seed)]
            else:
                u.texts = self._train_texts(u.doc, u.seed)
        if u.texts:
            clean = without_probes(u.texts, u.probes)
            if clean != u.texts or not self.memory.sequences(u.doc.doc_id):
                u.texts = clean or [f"{u.doc.title}\n{u.doc.context}"]
                self.memory.put_sequences(u.doc.doc_id, u.texts)
        u.t_edit = time.perf_counter()

    def _read_parent(self, u: "_Update") -> None:
        """Prod as this update finds it (under the update lock), what it holds, and any committed attempt."""
        u.parent = self.prod()
        u.parent_v = u.parent.version if u.parent else 0
        if self.c.merge_each_update:  # documents live in the weights, not in manifests
            u.learned = [d for d in self.memory.learned_at() if d != u.doc.doc_id]
            u.attempt = None
        else:
            u.learned = [d for d in (u.parent.doc_ids if u.parent else []) if d != u.doc.doc_id]
            u.attempt = self._find_attempt(u.doc.doc_id, u.parent_v)

    def _already_done(self, u: "_Update") -> UpdateResult | None:
        """A redelivered update that finished, or a document prod already holds: its record, nothing re-run."""
        if u.attempt is not None:
            done = self.memory.update(u.attempt.version)
            if done is not None and done["status"] in ("promoted", "rejected"):
                return self._recorded(done)
        if u.parent is not None and not self.c.merge_each_update and u.doc.doc_id in u.parent.doc_ids:
            # already in prod (a second submission, or a redelivery after promotion): no second adapter
            v = self.memory.learned_at().get(u.doc.doc_id, u.parent_v)
            row = self.memory.update(v)
            res = self._recorded(row) if row and row["doc_id"] == u.doc.doc_id else UpdateResult(
                u.doc.doc_id, u.parent_v, u.parent_v, "promoted", "", float("nan"), float("nan"), 0.0, 0,
                len(u.probes), u.source, replayed=True)
            res.reason = f"already learned in student-v{res.version}"
            return res
        return None

    def _train_until_accepted(self, u: "_Update") -> None:
        """Train a candidate, evaluate it, gate it; a candidate refused for what it cost the model (canary,
        drift) is kept on record and the update tries again gentler, up to `gate.retries` times."""
        self._prepare_general()
        mix = self._mix(u.doc, u.texts) if not u.cands and u.attempt is None else None
        stack_names = self._names(u.parent)
        u.before = self.accuracy_of(u.parent, stack_names)(u.doc) if u.probes else float("nan")
        u.replay = [] if self.routed else self._replay(u.learned)
        train_stack = [] if self.routed else stack_names  # routed: every adapter stands alone on the base
        tries: list[dict] = []
        while True:
            u.stage("training")
            t_train0 = time.perf_counter()
            if u.attempt is not None:  # trained and committed before a crash: evaluate it, do not train again
                u.m, gains, terms = u.attempt, None, None
                u.names = load_version(self.stack, self.student, u.m)
            elif tries and self.c.gate.retry == "rescale":
                u.m, u.names = self._rescale_commit(u.doc, u.parent, u.parent_v, u.m, self.c.gate.rescale)
                gains = terms = None
            else:
                u.m, u.names, u.texts, gains, terms = self._train_commit(
                    u.doc, u.parent, u.parent_v, u.cands, u.texts, mix, u.replay, train_stack, u.before, u.seed,
                    u.learned, u.settings)
            t_train = time.perf_counter()
            u.stage("evaluating")
            after, u.forgetting, monitored = self._evaluate(u.m, u.names, u.doc, u.probes, u.learned, u.parent_v)
            general = self._measure_general(u.m, u.names)
            t_mon = time.perf_counter()
            status, reason = self._gate(u.before, after, u.forgetting, general, bool(u.probes))
            res = UpdateResult(u.doc.doc_id, u.m.version, u.parent_v, status, reason, u.before, after, u.forgetting,
                               len(monitored), len(u.probes), u.source)
            self._general_fields(res, general)
            if u.attempt is None:
                res.candidates, res.candidate_terms = gains, terms
            res.seconds = {"probes": round(u.t_probe - u.t0, 2), "self_edit": round(u.t_edit - u.t_probe, 2),
                           "train": round(t_train - t_train0, 2), "monitor": round(t_mon - t_train, 2)}
            u.res = res
            retry = (status == "rejected" and reason.startswith(("canary", "drift")) and u.attempt is None
                     and not u.cands and len(tries) < self.c.gate.retries)
            if not retry:
                break
            how = (f"the delta x{self.c.gate.rescale:g}" if self.c.gate.retry == "rescale"
                   else f"learning rate x{self.c.gate.gentler_lr:g}")
            res.reason += f"; retrying with {how} (try {len(tries) + 2} of {self.c.gate.retries + 1})"
            self.memory.record_update(u.m.version, u.doc.doc_id, u.parent_v, status, res.reason, res.gain,
                                      u.forgetting, {"result": res.to_json(), "settings": _settings_brief(u.settings)})
            tries.append({"version": u.m.version, "reason": reason, "canary": res.canary, "drift": res.drift,
                          "after": after, "settings": _settings_brief(u.settings), "scale": u.scale})
            if self.c.gate.retry == "rescale":
                u.scale *= self.c.gate.rescale
            else:
                self._drop_unserved(u.names)
                u.settings = self._gentler(u.settings)
                self._names(u.parent)  # the parent's adapters live again for the next try
        if tries:
            u.res.attempts = tries
            if u.res.status == "rejected":
                u.res.reason = f"not learnable within the budget after {len(tries) + 1} tries: {u.res.reason}"

    def _promote(self, u: "_Update") -> None:
        """Compare-and-set prod: an operator's promote or rollback made while this update ran is not undone."""
        if u.res.status != "promoted":
            return
        with self.stack.writer():
            moved = self.stack.move_alias_if("prod", u.parent_v or None, u.m.version)
            if moved:
                advance_latest(self.stack, u.m.version)
        if moved:
            self.memory.mark_learned(u.doc.doc_id, u.m.version)
            return
        now = self.stack.aliases().get("prod")
        u.res.status = "rejected"
        u.res.reason = (f"prod moved from {f'student-v{u.parent_v}' if u.parent_v else 'none'} to "
                        f"{f'student-v{now}' if now else 'none'} while this update ran (a promote or "
                        f"rollback); {u.m.name} was not promoted: submit the document again to learn it "
                        "on the new prod")

    def _record(self, u: "_Update") -> None:
        """The update's row (written again as later stages add to it: consolidation, the teacher)."""
        info = {"replay_sequences": len(u.replay), "train_sequences": len(u.texts),
                "settings": _settings_brief(u.settings), "scale": u.scale}
        self.memory.record_update(u.m.version, u.doc.doc_id, u.parent_v, u.res.status, u.res.reason, u.res.gain,
                                  u.forgetting, info | {"result": u.res.to_json()})

    # -- the stages of one update --------------------------------------------------------------------------------
    def _prepare_general(self) -> None:
        """The untouched model's references (drift, retention) and its canary row (version 0), once."""
        needs_row = self.general is not None and 0 not in self.memory.general()
        wants_retain = self.cfg.train.retain.weight > 0 or (self.c.gate.enabled and self.c.gate.retries > 0)
        needs_targets = (self.general is not None and not self.general.ready) or (wants_retain and self._retain is None)
        if not (needs_row or needs_targets):
            return
        with self._base():
            if self.general is not None:
                self.general.prepare(self.student)
                if needs_row:
                    g = self.general.measure(self.student, None)
                    self.memory.record_general(0, g.canary.correct, g.canary.total, g.drift, g.to_json())
            if wants_retain and self._retain is None:
                self._retain = self._retain_targets()

    def _retain_targets(self):
        if self.general is not None:
            return self.general.retain_targets
        from evaluation.canary import reference_key, retain_prompts
        from student.soft_targets import neutral_targets

        rs = self.cfg.train.retain
        prompts = retain_prompts(self.c.canary, rs)
        key = reference_key(self.student, prompts, {"n": rs.max_new_tokens, "k": rs.topk})
        cache = Path(self.cfg.model.cache_dir).expanduser() / "reference" / f"retain-{key}.pt"
        with self.student.use(None) as m:
            return neutral_targets(m, self.student.tokenizer, prompts, rs.max_new_tokens, rs.topk, cache)

    def _mix(self, doc: Passage, texts: list[str]):
        """The document's units as training arguments; context-distillation targets need the untouched model."""
        from agent.training_data import build_mix

        if self.cfg.train.loss == "nll":
            return build_mix(texts, self.student.tokenizer, "nll")
        with self._base() as m:
            return build_mix(texts, self.student.tokenizer, self.cfg.train.loss, passage=doc, model=m,
                             k=self.cfg.train.retain.topk, temperature=self.cfg.train.distill_temperature)

    def _train_commit(self, doc, parent, parent_v, cands, texts, mix, replay, stack_names, before, seed, learned,
                      settings):
        """Train a new adapter on top of prod and commit it as a new (not yet promoted) version."""
        from agent.training_data import build_mix

        with self.stack.writer():
            version = self.stack.next_version()
            live = f"a{version:05d}"
            if cands:
                live, texts, gains, terms = self._best_candidate(doc, cands, live, replay, stack_names, before, seed,
                                                                 learned, parent_v, settings=settings, parent=parent)
            else:
                gains = terms = None
                extra = build_mix(replay, self.student.tokenizer, "nll")
                self.student.train_adapter(mix.texts + extra.texts, live, seed=seed, stack=stack_names,
                                           settings=settings, pairs=(mix.pairs + extra.pairs) or None,
                                           soft=mix.soft or None, retain=self._retain)
            if self.c.merge_each_update:
                # Paper baseline: merge into the weights. The stack stays empty; versions record documents.
                self.student.merge_into_base(live)
                ref_list = []
            else:
                ref_list = [*(parent.adapters if parent else ()),
                            self.stack.add_adapter(self.student, live, f"a{version:05d}", [doc.doc_id])]
            # a candidate: no alias moves until the gate passes it (`latest` names the newest promoted version)
            m = self.stack.commit(ref_list, parent_v or None, note=f"learn {doc.title[:60]}", move=())
        if live != f"a{version:05d}":  # a chosen candidate: serve it under its stack id
            self.student.drop(live)
            names = load_version(self.stack, self.student, m)
        else:
            names = [a.id for a in m.adapters if not a.merged]  # the live base holds the merged ones
        return m, names, texts, gains, terms

    def _rescale_commit(self, doc: Passage, parent: Manifest | None, parent_v: int, refused: Manifest,
                        factor: float) -> tuple[Manifest, list[str]]:
        """A gentler retry without retraining: the refused candidate's adapter with its delta scaled by
        `factor`, committed as a new candidate version (the refused one stays on record, unchanged)."""
        live = refused.adapters[-1].id
        if live not in self.student.adapters():
            load_version(self.stack, self.student, refused)
        with self.stack.writer():
            version = self.stack.next_version()
            self.student.scale_adapter(live, factor)
            ref = self.stack.add_adapter(self.student, live, f"a{version:05d}", [doc.doc_id])
            m = self.stack.commit([*(parent.adapters if parent else ()), ref], parent_v or None,
                                  note=f"learn {doc.title[:60]} (delta x{factor:g} of {refused.name})", move=())
        self.student.drop(live)
        return m, load_version(self.stack, self.student, m)

    def _evaluate(self, m: Manifest, names: list[str], doc: Passage, probes, learned: list[str], parent_v: int):
        """The new document's probes and past documents' probes on the new version -> ledger; mean drop."""
        measure = self.graded_of(m, names)
        graded = measure(doc) if probes else []
        after = _score(graded) if probes else float("nan")
        if probes:
            self.memory.record(m.version, doc.doc_id, after * len(probes), len(probes), answers=_replies(graded))
        monitored = self._monitored(doc.doc_id, learned)
        drops = []
        ledger = self.memory.ledger()
        for d in monitored:
            past = self.memory.document(d)
            if not past.questions:
                continue
            graded = measure(past)
            acc = _score(graded)
            self.memory.record(m.version, d, acc * len(past.questions), len(past.questions), answers=_replies(graded))
            prev = _latest(ledger, d, parent_v)
            if prev is not None:
                drops.append(max(0.0, prev - acc))
        return after, (sum(drops) / len(drops) if drops else 0.0), monitored

    def _measure_general(self, m: Manifest, names: list[str]):
        if self.general is None:
            return None
        served = self._served(m, names) if self.vllm is not None else None
        routing = self.routing(m, names)
        reader = None
        if self.cfg.serving.answer == "recite" and routing is not None and self.vllm is None:
            from evaluation.closed_book import answer_routed_recite
            from teacher.passages import recitation_parts

            memo = self.recitations()

            def reader(rt, qs):  # as served: a general question routed to a document reads its recitation
                return answer_routed_recite(self.student, rt, qs, lambda d: recitation_parts(self.memory.document(d)),
                                            self.general.s.max_new_tokens, self.general.s.batch_size,
                                            memo, self.cfg.serving.recite_parts)
        g = self.general.measure(self.student, names, served=served, backend=self.generation, routing=routing,
                                 reader=reader)
        self.memory.record_general(m.version, g.canary.correct, g.canary.total, g.drift, g.to_json())
        return g

    def _general_fields(self, res: UpdateResult, general) -> None:
        if general is None:
            return
        base = self.memory.general().get(0)
        res.canary, res.drift = general.canary.accuracy, general.drift
        res.canary_base = base["canary"] if base else None

    def _gate(self, before: float, after: float, forgetting: float, general, has_probes: bool) -> tuple[str, str]:
        if not self.c.gate.enabled or self.c.merge_each_update:
            return "promoted", ""
        canary_drop = canary = canary_base = drift = None
        if general is not None:
            base = self.memory.general().get(0)
            canary, drift = general.canary.accuracy, general.drift
            canary_base = base["canary"] if base else None
            canary_drop = (canary_base - canary) if base else 0.0
        return gate_decision(self.c.gate, before, after, forgetting, has_probes, canary_drop, drift, canary,
                             canary_base)

    def _gentler(self, s):
        g, r = self.c.gate, s.retain
        weight = max(r.weight, 1.0) * g.gentler_retain if r.weight > 0 else 1.0
        return s.model_copy(update={"learning_rate": s.learning_rate * g.gentler_lr,
                                    "retain": r.model_copy(update={"weight": weight})})

    def _drop_unserved(self, names: list[str]) -> None:
        """Keep live adapters bounded: drop those no longer in prod."""
        prod = self.prod()
        keep = {a.id for a in prod.adapters} if prod else set()
        for n in names:
            if n not in keep:
                self.student.drop(n)

    def _retention_probes(self, learned: list[str], parent_v: int) -> list[tuple[Passage, float]]:
        """Up to rl.retention_docs learned documents with probes and their accuracy on the parent version:
        what a candidate must not make the student forget (the retention-aware reward)."""
        n = self.cfg.rl.retention_docs  # measured even at lambda 0, so the term's effect can be audited
        if not n or not learned:
            return []
        ledger = self.memory.ledger()
        out = []
        for d in reversed(learned):  # the most recently learned first
            prev = _latest(ledger, d, parent_v)
            past = self.memory.document(d)
            if prev is not None and prev > 0 and past is not None and past.questions:
                out.append((past, prev))
            if len(out) == n:
                break
        return out

    def _best_candidate(self, doc: Passage, cands, base_name: str, replay: list[str], stack_names: list[str],
                        before: float, seed: int, learned: list[str] = (), parent_v: int = 0, settings=None,
                        parent: Manifest | None = None) -> tuple[str, list[str], list[float], list[dict]]:
        """Train every candidate self-edit on the current student; keep the one with the best reward (ties:
        the first). Reward = gain on the document, minus rl.retention_lambda x the mean accuracy drop on the
        probes of recently learned documents when rl.retention_docs > 0. The stored sample gain is that
        reward, so the teacher is trained on what the agent selected for."""
        from agent.training_data import build_mix

        best, gains, terms = None, [], []
        guard = self._retention_probes(list(learned), parent_v)
        lam = self.cfg.rl.retention_lambda
        extra = build_mix(replay, self.student.tokenizer, "nll")
        for k, _raw, texts in cands:
            name = f"{base_name}-c{k}"
            # trained exactly as the update it competes to become (settings, pairs, soft targets, retention) ...
            mix = self._mix(doc, texts)
            self.student.train_adapter(mix.texts + extra.texts, name, seed=seed, stack=stack_names,
                                       settings=settings or self.cfg.train, pairs=(mix.pairs + extra.pairs) or None,
                                       soft=mix.soft or None, retain=self._retain)
            target = self._candidate_target(doc, name, stack_names, parent)  # ... and scored as it would be served
            gain = self.accuracy(target, doc) - before
            drops = [max(0.0, prev - self.accuracy(target, past)) for past, prev in guard]
            forgetting = sum(drops) / len(drops) if drops else 0.0
            score = reward(gain, forgetting, lam)
            gains.append(score)
            terms.append({"k": k, "gain": gain, "forgetting": forgetting, "reward": score,
                          "guarded_docs": len(drops)})
            if best is None or score > best[0]:
                if best is not None:
                    self.student.drop(best[1])
                best = (score, name, texts, k)
            else:
                self.student.drop(name)
        for (k, _raw, _t), g in zip(cands, gains):
            self.memory.set_sample_gain(doc.doc_id, k, g, chosen=k == best[3])
        self.memory.put_sequences(doc.doc_id, best[2])
        return best[1], best[2], gains, terms

    def _candidate_target(self, doc: Passage, name: str, stack_names: list[str], parent: Manifest | None):
        """What answers for a candidate: stacked on prod, or routed among prod's documents and this one (each
        question meets only its own document's adapter), as the gate measures the committed version."""
        if not self.routed:
            return [*stack_names, name]
        from serving.routing import build_routing

        adapter_of = {d: a.id for a in (parent.adapters if parent else ()) for d in a.doc_ids} | {doc.doc_id: name}
        docs = {d: f"{p.title}\n{p.context}" for d in adapter_of
                if self.memory.has_document(d) and (p := self.memory.document(d))}
        return build_routing(adapter_of, docs, self.c.routing, self.c.canary) or [name]

    def _find_attempt(self, doc_id: str, parent_v: int) -> Manifest | None:
        """A version already committed for this document on this parent (the idempotency key)."""
        for v in reversed(self.stack.versions()):
            m = self.stack.manifest(v)
            if ((m.parent or 0) == parent_v and m.note.startswith("learn ") and m.adapters
                    and m.adapters[-1].doc_ids == (doc_id,) and m.adapters[-1].kind == "lora"):
                return m
            if v <= parent_v:
                break
        return None

    def _recorded(self, row: dict) -> UpdateResult:
        r = dict(row["info"].get("result") or {})
        if not r:  # recorded by an older version of this code: rebuild what the row holds
            r = {"doc_id": row["doc_id"], "version": row["version"], "parent": row["parent"] or 0,
                 "status": row["status"], "reason": row["reason"] or "", "before": float("nan"),
                 "after": float("nan"), "forgetting": row["forgetting"] or 0.0, "replayed_docs": 0, "probes": 0,
                 "probe_source": ""}
        r["replayed"] = True
        return UpdateResult.from_json(r)

    def _maybe_consolidate(self, m: Manifest) -> int | None:
        cs = self.c.consolidation
        live_refs = [a for a in m.adapters if not a.merged]
        promoted = sum(1 for u in self.memory.updates() if u["status"] == "promoted")
        due = len(live_refs) > cs.max_depth or bool(cs.every and promoted % cs.every == 0)
        if not due or not live_refs or (cs.into == "adapter" and len(live_refs) < 2):
            return None
        names = load_version(self.stack, self.student, m)
        merged_refs = [a for a in m.adapters if a.merged]
        with self.stack.writer():
            if self.stack.aliases().get("prod") != m.version:  # an operator moved prod since the promotion
                return None
            if cs.into == "base" and len(live_refs) == 1 and cs.rank is None:
                # one adapter: serve it merged as it is (same files, so nothing new is written)
                ref = live_refs[0]
                new_refs = [*merged_refs, AdapterRef(ref.id, ref.doc_ids, ref.rank, ref.kind, ref.files, True)]
                note = f"merge {ref.id} into the base"
            else:
                version = self.stack.next_version()
                live = f"a{version:05d}"
                rep = fold(self.student, names, live, rank=cs.rank)
                ref = self.stack.add_adapter(self.student, live, live, [d for a in live_refs for d in a.doc_ids],
                                             kind="consolidated")
                if cs.into == "base":
                    ref = AdapterRef(ref.id, ref.doc_ids, ref.rank, ref.kind, ref.files, True)
                new_refs = [*merged_refs, ref]
                note = (f"fold {len(names)} adapters, rank {rep.rank_out}, rel error {rep.rel_error:.4f}"
                        + (", merged into the base" if cs.into == "base" else ""))
            new = self.stack.commit(new_refs, m.version, note=note, move=("latest", "prod"))
        self.memory.record_update(new.version, None, m.version, "consolidated", new.note)
        for n in names:
            self.student.drop(n)
        names = load_version(self.stack, self.student, new)  # serve the consolidated form from now on
        g = self.memory.general().get(m.version)
        if g is not None:  # an exact fold computes the same function: carry the figures; a compressed one is measured
            if cs.rank is None:
                self.memory.record_general(new.version, g["correct"], g["total"], g["drift"], g["info"])
            else:
                self._measure_general(new, names)
        return new.version


def _settings_brief(s) -> dict:
    return {"learning_rate": s.learning_rate, "epochs": s.epochs, "rank": s.rank, "loss": s.loss,
            "retain_weight": s.retain.weight}


def forgetting_report(memory: MemoryStore):
    """The ledger restricted to promoted updates (rejected candidates and folds are not steps of the stream)."""
    from evaluation.forgetting import compute

    ledger = memory.ledger()
    promoted = {u["version"] for u in memory.updates() if u["status"] == "promoted"}
    steps = {v: row for v, row in ledger.items() if v in promoted}
    general = {v: g for v, g in memory.general().items() if v == 0 or v in promoted}
    return compute(steps, memory.learned_at(), base=ledger.get(0, {}), general=general)


def memory_target(cfg: SealConfig) -> str:
    from pathlib import Path

    return cfg.continual.database or str(Path(cfg.continual.state_dir) / "memory.sqlite")


def has_state(cfg: SealConfig) -> bool:
    from pathlib import Path

    return bool(cfg.continual.database) or (Path(cfg.continual.state_dir) / "memory.sqlite").is_file()


def open_learner(student: Student, cfg: SealConfig, teacher: Student | None = None) -> ContinualLearner:
    from pathlib import Path

    from serving.vllm_adapters import open_vllm

    root = Path(cfg.continual.state_dir)
    stack = StackStore(root / "stack")
    vllm = open_vllm(cfg, stack, student.tokenizer)
    return ContinualLearner(student, cfg, stack, MemoryStore(memory_target(cfg)), teacher, vllm=vllm)


def remove_document(lr: ContinualLearner, doc_id: str,
                    update_lock: bool = True) -> tuple[Manifest, dict[str, tuple[float, float]]]:
    """Undo one document: a new version without its adapter, promoted; returns per-document accuracy before
    and after on every learned document's probes (what else changed).

    The whole removal holds the stack's update lock (`stack.updating()`, the one every update holds from reading
    prod to promoting), so an update in flight elsewhere (a worker, the service) cannot promote a version built
    on the old prod after it (which would put the document back), and the removal cannot drop an update promoted
    meanwhile. `update_lock=False`: the caller already holds it (a second flock in one process would wait on
    itself)."""
    if not update_lock:
        return _remove_document(lr, doc_id)
    with lr.stack.updating():
        return _remove_document(lr, doc_id)


def _remove_document(lr: ContinualLearner, doc_id: str) -> tuple[Manifest, dict[str, tuple[float, float]]]:
    prod = lr.prod()  # read under the update lock: the prod this removal replaces
    if prod is None:
        raise ValueError("nothing learned yet")
    hits = [a for a in prod.adapters if doc_id in a.doc_ids]
    if not hits:
        raise ValueError(f"document {doc_id} is not in {prod.name}")
    if len(hits[0].doc_ids) > 1:
        raise ValueError(f"document {doc_id} was folded into consolidated adapter {hits[0].id} with "
                         f"{len(hits[0].doc_ids) - 1} other documents; roll back to a version before the fold")
    old_names = lr._names(prod)
    docs = [p for p in (lr.memory.document(d) for d in prod.doc_ids) if p.questions]
    before = {p.doc_id: lr.accuracy(old_names, p) for p in docs}
    with lr.stack.writer():
        new = lr.stack.commit([a for a in prod.adapters if a.id != hits[0].id], prod.version,
                              note=f"remove document {doc_id}", move=("latest", "prod"))
    new_names = lr._names(new)  # a removed merged adapter means the base is rebuilt without it
    changes = {}
    for p in docs:
        graded = lr.graded(new_names, p)
        after = _score(graded)
        lr.memory.record(new.version, p.doc_id, after * len(p.questions), len(p.questions), answers=_replies(graded))
        changes[p.doc_id] = (before[p.doc_id], after)
    lr.memory.record_update(new.version, doc_id, prod.version, "removed", f"removed {doc_id}")
    return new, changes


def gate_decision(g, before: float, after: float, forgetting: float, has_probes: bool,
                  canary_drop: float | None = None, drift: float | None = None, canary: float | None = None,
                  canary_base: float | None = None) -> tuple[str, str]:
    """Promote or refuse one candidate (settings `g`: continual.gate). A probe set the untouched model already
    answers in full cannot show a gain, so it does not refuse for one: such a document is promoted when the
    probes stay answered and the keep checks (forgetting, canary, drift) pass, and the reason says so."""
    saturated = has_probes and before >= 1.0 - 1e-9
    if saturated and after < before:
        return "rejected", f"probes already answered before learning, {after:.2f} after"
    if has_probes and not saturated and after - before < g.min_gain:
        return "rejected", f"gain {after - before:+.2f} < {g.min_gain:+.2f}"
    if forgetting > g.max_forgetting:
        return "rejected", f"forgetting {forgetting:.2f} > {g.max_forgetting:.2f}"
    if canary_drop is not None:
        if g.max_canary_drop is not None and canary_drop > g.max_canary_drop + 1e-9:
            return "rejected", (f"canary drop {100 * canary_drop:.1f} points > budget {100 * g.max_canary_drop:.1f} "
                                f"(canary {100 * (canary or 0):.1f}% vs untouched {100 * (canary_base or 0):.1f}%)")
        if g.max_drift is not None and drift is not None and drift > g.max_drift:
            return "rejected", f"drift {drift:.4f} > budget {g.max_drift:.4f} nats/token"
    if saturated:
        return "promoted", "probes already answered before learning: no gain to measure, kept on the keep checks"
    return "promoted", ""
