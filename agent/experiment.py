"""`seal eval`: the paper's single-passage protocol, one fresh adapter per (passage, condition).

Conditions:
  none                 the base model, no update
  learn                the configured learning mode, as the continual learner trains (continual.train_on,
                       train.loss, train.retain: the product's default regime)
  passage              LoRA on the passage alone
  passage-repeat       the passage alone, repeated to the same optimizer steps as `self-edit` on that passage
                       (as `learn` when self-edit is not among the conditions)
  self-edit            the teacher's self-edit (grounding guard per config) + the passage
  self-edit-unguarded  the same sampled self-edit with the guard off (same sample: a paired comparison)
  external:FILE        completions from a SEAL-format file + the passage
  teacher:RUN@N        the self-edit written by teacher-vN of an RL run (`seal rl`), sampled like `self-edit`

Results go to per-question JSONL as each unit finishes; a rerun with the same --out resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.documents import Passage
from core.io import append_jsonl, read_jsonl
from evaluation.closed_book import evaluate_passage
from student.runtime import Runtime
from teacher.external import ExternalEdits
from teacher.self_edit import SelfEdit, build_self_edit
from teacher.writer import TeacherWriter

BASIC = ("none", "learn", "passage", "passage-repeat", "self-edit", "self-edit-unguarded")
ORDER = {"none": 0, "learn": 1, "self-edit": 2, "self-edit-unguarded": 3, "passage": 4, "passage-repeat": 5}


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    name: str
    external: Path | None = None
    teacher: tuple[Path, int] | None = None  # (RL run dir, teacher version)


def parse_conditions(spec: str) -> list[Condition]:
    conds: list[Condition] = []
    for raw in [c.strip() for c in spec.split(",") if c.strip()]:
        if raw.startswith("external:"):
            path = Path(raw.split(":", 1)[1])
            if not path.is_file():
                raise ConditionError(f"external self-edit file not found: {path}")
            conds.append(Condition(raw, path))
        elif raw.startswith("teacher:"):
            spec = raw.split(":", 1)[1]
            run, sep, ver = spec.rpartition("@")
            if not sep or not ver.isdigit():
                raise ConditionError(f"{raw!r}: expected teacher:RUN_DIR@VERSION")
            from teacher.versions import TeacherStore

            versions = TeacherStore(Path(run) / "teachers").versions() if (Path(run) / "teachers").is_dir() else []
            if int(ver) != 0 and int(ver) not in versions:
                raise ConditionError(f"{raw!r}: {run} has no teacher-v{ver} (it has {versions or 'none'})")
            conds.append(Condition(raw, teacher=(Path(run), int(ver))))
        elif raw in BASIC:
            conds.append(Condition(raw))
        else:
            raise ConditionError(f"unknown condition {raw!r}; use {', '.join(BASIC)}, external:FILE or "
                                 "teacher:RUN@N")
    if not conds:
        raise ConditionError("no conditions given")
    if len({c.name for c in conds}) != len(conds):
        raise ConditionError("a condition is listed twice")
    return sorted(conds, key=lambda c: ORDER.get(c.name, 9))


class EvalRun:
    def __init__(self, rt: Runtime, conditions: list[Condition], out: Path,
                 log: Callable[[str], None] = print, judge=None, progress: bool = True, general=None,
                 unrouted: bool = True, retain_all: bool = False):
        self.rt, self.cfg, self.conditions, self.out, self.log = rt, rt.cfg, conditions, out, log
        self.judge, self.progress = judge, progress
        self.unrouted = unrouted  # with routing: also the canary had the adapter answered everything (one more pass)
        # every condition trains with the product's retention (train.retain), not `learn` alone: a comparison of
        # what each kind of training text teaches under the regime the product actually runs
        self.retain_all = retain_all
        if retain_all and (general is None or rt.cfg.train.retain.weight <= 0):
            raise ValueError("retain_all trains every condition with retention: give a GeneralMonitor and set "
                             "train.retain.weight > 0")
        self.records_path = out / "records.jsonl"
        self.units_path = out / "units.jsonl"
        self.edits_path = out / "self_edits.jsonl"
        self.externals = {c.name: ExternalEdits(c.external) for c in conditions if c.external}
        self.done = {(u["doc_id"], u["condition"]): u for u in read_jsonl(self.units_path)}
        self.edits = {(e["doc_id"], e.get("condition") or e["guarded"]): e for e in read_jsonl(self.edits_path)}
        self.writer = TeacherWriter(rt.teacher.model, rt.teacher.tokenizer, self.cfg.teacher)
        # evaluation.canary.GeneralMonitor: when given, every adaptation's canary and drift are measured too
        self.general = general
        if general is not None:
            general.prepare(rt.student)  # the untouched model: an eval run never merges
            self.canary_base = general.measure(rt.student, None).canary.accuracy

    # -- self-edits ------------------------------------------------------------------------------------
    def _self_edit(self, idx: int, p: Passage, guarded: bool) -> SelfEdit:
        key = (p.doc_id, guarded)
        if key in self.edits:
            e = self.edits[key]
            return build_self_edit(p, e["raw"], e["format"],
                                   self.cfg.teacher.grounding.model_copy(update={"enabled": guarded}))
        other = self.edits.get((p.doc_id, not guarded))
        if other is not None:
            raw = other["raw"]
        else:
            with self.rt.teacher.use(None) as m:  # the teacher is the un-updated base model
                raw = self.writer.sample_raw([p], seed=self.cfg.seed * 100_003 + idx, model=m)[0]
        se = build_self_edit(p, raw, self.cfg.teacher.format,
                             self.cfg.teacher.grounding.model_copy(update={"enabled": guarded}))
        rec = {**se.to_json(), "guarded": guarded, "title": p.title}
        append_jsonl(self.edits_path, rec)
        self.edits[key] = rec
        return se

    def _teacher_edit(self, idx: int, p: Passage, cond: Condition) -> SelfEdit:
        """Sampled exactly like `self-edit` (same seed), from a trained teacher's adapter: a paired comparison."""
        key = (p.doc_id, cond.name)
        if key not in self.edits:
            run, version = cond.teacher
            name = None
            if version:
                from teacher.versions import TeacherStore

                store = TeacherStore(run / "teachers")
                name = "cond-" + cond.name.replace(":", "_").replace("/", "_").replace(".", "_").replace("@", "_")
                if name not in self.rt.teacher.adapters():
                    store.verify(store.get(version))
                    self.rt.teacher.load(store.adapter_dir(version), name)
            with self.rt.teacher.use(name) as m:
                raw = self.writer.sample_raw([p], seed=self.cfg.seed * 100_003 + idx, model=m)[0]
            se = build_self_edit(p, raw, self.cfg.teacher.format, self.cfg.teacher.grounding)
            rec = {**se.to_json(), "guarded": True, "condition": cond.name, "title": p.title}
            append_jsonl(self.edits_path, rec)
            self.edits[key] = rec
        e = self.edits[key]
        return build_self_edit(p, e["raw"], e["format"], self.cfg.teacher.grounding)

    # -- one unit ---------------------------------------------------------------------------------------
    def _train_texts(self, idx: int, p: Passage, cond: Condition) -> tuple[list[str] | None, dict]:
        s = self.cfg.train
        passage_seq = f"{p.title}\n{p.context}"
        if cond.name == "none":
            return None, {}
        if cond.name == "passage":
            return [passage_seq], {}
        if cond.name in ("self-edit", "self-edit-unguarded"):
            se = self._self_edit(idx, p, guarded=cond.name == "self-edit")
            return se.sequences(p, s.passage_in_training), {"units": len(se.units), "dropped": len(se.dropped),
                                                            "parsed": se.parsed}
        if cond.name == "passage-repeat":
            ref_name = "self-edit" if any(c.name == "self-edit" for c in self.conditions) else "learn"
            ref = self.done.get((p.doc_id, ref_name))
            if ref and ref.get("train"):
                n = ref["train"]["steps"] if ref_name == "learn" else ref["train"]["sequences"]
            elif ref_name == "learn":
                n = s.epochs * len(self._learn_units(idx, p))
            else:
                n = len(self._self_edit(idx, p, True).sequences(p))
            if ref_name == "learn":  # step-matched: one passage copy per step of the learn condition
                n = max(1, round(n / s.epochs))
            return [passage_seq] * n, {"matched_to": ref_name}
        if cond.name == "learn":
            return self._learn_units(idx, p), {"regime": self.cfg.continual.train_on, "loss": s.loss,
                                               "retain_weight": s.retain.weight}
        if cond.teacher is not None:
            se = self._teacher_edit(idx, p, cond)
        else:
            se = self.externals[cond.name].self_edit(p, self.cfg.teacher.format, self.cfg.teacher.grounding)
        return se.sequences(p, s.passage_in_training), {"units": len(se.units), "dropped": len(se.dropped)}

    def _learn_units(self, idx: int, p: Passage) -> list[str]:
        from agent.training_data import qa_units

        on = self.cfg.continual.train_on
        if on == "self-edit":
            return self._self_edit(idx, p, guarded=True).sequences(p, self.cfg.train.passage_in_training)
        units = qa_units(p, self.cfg.continual.qa_pairs, self.cfg.seed + idx) if on.startswith("qa") else []
        copies = self.cfg.continual.passage_copies if on == "passage" else 1
        return units + ([f"{p.title}\n{p.context}"] * copies if on in ("passage", "qa+passage") or not units else [])

    def _train(self, idx: int, p: Passage, cond: Condition, texts: list[str], adapter: str):
        """`learn` trains exactly as the continual learner does (QA pairs, distillation, retention); the other
        conditions train on raw text with the plain next-token loss, as in the paper."""
        st, s = self.rt.student, self.cfg.train
        kw = dict(seed=self.cfg.seed + idx, progress=self.progress, desc=f"[{idx}] {cond.name}")
        if cond.name != "learn" and self.retain_all:
            return st.train_adapter(texts, adapter, settings=s.model_copy(update={"loss": "nll"}),
                                    retain=self.general.retain_targets, **kw)
        if cond.name != "learn":
            plain = s.model_copy(update={"retain": s.retain.model_copy(update={"weight": 0.0}), "loss": "nll"})
            return st.train_adapter(texts, adapter, settings=plain, **kw)
        from agent.training_data import build_mix

        with st.use(None) as m:
            mix = build_mix(texts, st.tokenizer, s.loss, passage=p, model=m, k=s.retain.topk)
        retain = self.general.retain_targets if self.general is not None and s.retain.weight > 0 else None
        if s.retain.weight > 0 and retain is None:
            raise ValueError("the learn condition trains with retention (train.retain.weight > 0): run it with "
                             "the canary on (continual.canary.enabled)")
        return st.train_adapter(mix.texts, adapter, pairs=mix.pairs or None, soft=mix.soft or None, retain=retain,
                                **kw)

    def run_unit(self, idx: int, p: Passage, cond: Condition) -> dict:
        t0 = time.perf_counter()
        texts, info = self._train_texts(idx, p, cond)
        t_edit = time.perf_counter() - t0
        adapter, train = None, None
        if texts is not None:
            adapter = f"u{idx}-{cond.name.replace(':', '_').replace('/', '_').replace('.', '_').replace('@', '_')}"
            stats = self._train(idx, p, cond, texts, adapter)
            train = stats.summary()
        t1 = time.perf_counter()
        routing = None
        if adapter and self.cfg.continual.routing.enabled:  # as served: the adapter answers its document only
            from serving.routing import build_routing

            routing = build_routing({p.doc_id: adapter}, {p.doc_id: f"{p.title}\n{p.context}"},
                                    self.cfg.continual.routing, self.cfg.continual.canary)
        graded = evaluate_passage(self.rt.student, routing or adapter, p, self.cfg.eval.max_new_tokens,
                                  self.cfg.eval.batch_size, self.judge)
        t_eval = time.perf_counter() - t1
        if self.general is not None:
            g = self.general.measure(self.rt.student, [adapter] if adapter else None, routing=routing)
            info = info | {"canary": g.canary.accuracy, "canary_drop": self.canary_base - g.canary.accuracy,
                           "drift": g.drift}
            if routing is not None:  # how many of its own questions reach the adapter
                info["routed_share"] = sum(r.doc_id is not None for r in routing.routes(
                    [q.question for q in p.questions])) / max(1, len(p.questions))
            if routing is not None and self.unrouted:  # and the adapter's own cost, had it answered everything
                u = self.general.measure(self.rt.student, [adapter])
                info = info | {"canary_unrouted": u.canary.accuracy,
                               "canary_drop_unrouted": self.canary_base - u.canary.accuracy}
        if adapter:
            self.rt.student.drop(adapter)
        for qi, g in enumerate(graded):
            append_jsonl(self.records_path, {"passage": idx, "doc_id": p.doc_id, "title": p.title,
                                             "condition": cond.name, "q": qi, **g.to_json()})
        unit = {"passage": idx, "doc_id": p.doc_id, "condition": cond.name, "train": train, **info,
                "seconds": {"self_edit": round(t_edit, 3), "eval": round(t_eval, 3),
                            "total": round(time.perf_counter() - t0, 3)},
                "contains": sum(g.contains for g in graded) / max(1, len(graded))}
        append_jsonl(self.units_path, unit)
        self.done[(p.doc_id, cond.name)] = unit
        return unit

    def sample_edits(self, passages: list[Passage]) -> int:
        """Sample and store every condition's self-edit for these passages, training nothing: afterwards the
        evaluation reads them from self_edits.jsonl and no longer needs the teachers' adapters (a run resumed
        on a machine without them measures the same texts). Returns how many were sampled now."""
        before = len(self.edits)
        for idx, p in enumerate(passages):
            if not p.questions:
                continue
            for cond in self.conditions:
                if cond.teacher is not None:
                    self._teacher_edit(idx, p, cond)
                elif cond.name in ("self-edit", "self-edit-unguarded"):
                    self._self_edit(idx, p, guarded=cond.name == "self-edit")
        return len(self.edits) - before

    def run(self, passages: list[Passage], on_passage: Callable[[int], None] | None = None,
            shard: tuple[int, int] = (0, 1)) -> None:
        """`shard` (i, n) takes every n-th passage from the i-th: n processes share one run directory (units are
        keyed by document, appends are locked) and each passage keeps its index, so its seeds match a whole run."""
        i, n = shard
        for idx, p in enumerate(passages):
            if idx % n != i:
                continue
            if not p.questions:
                self.log(f"[{idx}] {p.title}: no questions, skipped")
                continue
            for cond in self.conditions:
                if (p.doc_id, cond.name) in self.done:
                    continue
                u = self.run_unit(idx, p, cond)
                steps = u["train"]["steps"] if u["train"] else 0
                self.log(f"[{idx}] {p.title[:28]:28s} {cond.name:20s} contains={u['contains']:.2f} "
                         f"steps={steps:4d} {u['seconds']['total']:.1f}s")
            if on_passage:
                on_passage(idx)
