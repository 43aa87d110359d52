"""`seal eval`: the paper's single-passage protocol, one fresh adapter per (passage, condition).

Conditions:
  none                 the base model, no update
  open-book            the base model with the passage in its prompt: the ceiling closed-book learning aims at
  learn                the configured learning mode, as the continual learner trains (continual.train_on,
                       train.loss, train.retain: the product's default regime)
  passage              LoRA on the passage alone
  passage-repeat       the passage alone, repeated to the same optimizer steps as `self-edit` on that passage
                       (as `learn` when self-edit is not among the conditions)
  self-edit            the teacher's self-edit (grounding guard per config) + the passage
  self-edit-unguarded  the same sampled self-edit with the guard off (same sample: a paired comparison)
  external:FILE        completions from a SEAL-format file + the passage
  teacher:RUN@N        the self-edit written by teacher-vN of an RL run (`seal rl`), sampled like `self-edit`
  recipe:NAME          like `learn`, with the config's named recipe applied (`recipes:` in the config)

Grading is as served: one router holds every passage of the run (not only the one being learned), so a
question routed to another passage's adapter counts as a miss, one routed to none meets the untouched model.
Each record also keeps the oracle answer (the passage's own adapter answers every one of its questions).
Extra question sets (hand-written rewordings) are asked of the same adapters and graded the same way.

Results go to per-question JSONL as each unit finishes; a rerun with the same --out resumes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.documents import QA, Passage
from core.io import append_jsonl, read_jsonl
from evaluation.closed_book import evaluate_passage
from student.runtime import Runtime
from teacher.external import ExternalEdits
from teacher.self_edit import SelfEdit, build_self_edit
from teacher.writer import TeacherWriter

BASIC = ("none", "open-book", "learn", "passage", "passage-repeat", "self-edit", "self-edit-unguarded")
ORDER = {"none": 0, "open-book": 0.5, "learn": 1, "self-edit": 2, "self-edit-unguarded": 3, "passage": 4,
         "passage-repeat": 5}


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    name: str
    external: Path | None = None
    teacher: tuple[Path, int] | None = None  # (RL run dir, teacher version)


def parse_conditions(spec: str, recipes: dict[str, list[str]] | None = None) -> list[Condition]:
    conds: list[Condition] = []
    for raw in [c.strip() for c in spec.split(",") if c.strip()]:
        if raw.startswith("recipe:"):
            name = raw.split(":", 1)[1]
            if name not in (recipes or {}):
                raise ConditionError(f"{raw!r}: the config defines no recipe {name!r} (it has: "
                                     f"{', '.join(sorted(recipes or {})) or 'none'})")
            conds.append(Condition(raw))
        elif raw.startswith("external:"):
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
            raise ConditionError(f"unknown condition {raw!r}; use {', '.join(BASIC)}, recipe:NAME, external:FILE "
                                 "or teacher:RUN@N")
    if not conds:
        raise ConditionError("no conditions given")
    if len({c.name for c in conds}) != len(conds):
        raise ConditionError("a condition is listed twice")
    return sorted(conds, key=lambda c: 1.5 if c.name.startswith("recipe:") else ORDER.get(c.name, 9))


def trains_like_learn(name: str) -> bool:
    """`learn` and the recipes train as the continual learner does; the other conditions on plain raw text."""
    return name == "learn" or name.startswith("recipe:")


@dataclass(frozen=True)
class Asked:
    """One question asked of a unit: SQuAD's own (`squad`) or an extra set (e.g. `reworded`)."""

    set: str
    question: str
    answer: str


def load_extra_questions(path: Path, passages: list[Passage]) -> dict[str, list[Asked]]:
    """Extra questions by document (`{set?, questions: [{doc_id, question, answer}]}`); entries for passages
    not selected are ignored, and a file that matches none of them is an error (wrong file or split)."""
    from core.documents import DocumentFormatError, read_json

    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise DocumentFormatError(f"{path}: expected an object with a 'questions' list")
    name = str(data.get("set", "reworded"))
    if name == "squad":
        raise DocumentFormatError(f"{path}: set name 'squad' is taken by the passages' own questions")
    ids = {p.doc_id for p in passages}
    out: dict[str, list[Asked]] = {}
    for i, q in enumerate(data["questions"]):
        if not isinstance(q, dict) or not all(isinstance(q.get(k), str) and q[k].strip()
                                              for k in ("doc_id", "question", "answer")):
            raise DocumentFormatError(f"{path}: questions[{i}] needs non-empty strings doc_id, question, answer")
        if q["doc_id"] in ids:
            out.setdefault(q["doc_id"], []).append(Asked(name, q["question"].strip(), q["answer"].strip()))
    if not out:
        raise DocumentFormatError(f"{path}: none of its questions is about a selected passage (check the file "
                                  "and --offset/--every/--limit)")
    return out


def _overlap(recitation: str, context: str) -> float:
    """Share of the passage's words that the recitation reproduces (bag of words): how much the weights held."""
    from collections import Counter

    want, got = Counter(context.lower().split()), Counter(recitation.lower().split())
    return sum((want & got).values()) / max(1, sum(want.values()))


class EvalRun:
    def __init__(self, rt: Runtime, conditions: list[Condition], out: Path,
                 log: Callable[[str], None] = print, judge=None, progress: bool = True, general=None,
                 unrouted: bool = True, retain_all: bool = False, passages: list[Passage] | None = None,
                 extra_questions: dict[str, list[Asked]] | None = None, repeat_matches: str | None = None,
                 measure_general: bool = True, recite: bool = False,
                 recite_only: list[str] | None = None):
        self.rt, self.cfg, self.conditions, self.out, self.log = rt, rt.cfg, conditions, out, log
        # what passage-repeat is step-matched to: the named condition, else self-edit, learn or the first recipe
        trained = [c.name for c in conditions if c.name == "self-edit" or trains_like_learn(c.name)]
        # a recipe of the config may be matched without training it in this run (its steps follow from its config)
        known_recipe = (repeat_matches or "").startswith("recipe:") and repeat_matches[7:] in rt.cfg.recipes
        if repeat_matches is not None and repeat_matches not in trained and not known_recipe:
            raise ValueError(f"--repeat-matches {repeat_matches!r} is neither a trained condition of this run "
                             f"({', '.join(trained) or 'none'}) nor a recipe of the config")
        self.repeat_ref = repeat_matches or (trained[0] if trained else None)
        self.extra = extra_questions or {}
        # as served: one router over every passage of the run (built once; every shard builds the same one)
        self.router = None
        if self.cfg.continual.routing.enabled and passages:
            from serving.routing import build_routing

            docs = {q.doc_id: f"{q.title}\n{q.context}" for q in passages}
            self.router = build_routing({d: d for d in docs}, docs, self.cfg.continual.routing,
                                        self.cfg.continual.canary).router
        self.judge, self.progress = judge, progress
        # also answer each trained condition by recite-then-read (`<condition>+recite` rows, same adapter)
        self.recite = recite
        names = {c.name for c in conditions}
        unknown = sorted(set(recite_only or ()) - names)
        if unknown:
            raise ValueError(f"--recite-only names conditions this run does not have: {', '.join(unknown)}")
        # None: every trained condition is also answered by recite-then-read; else only these
        self.recite_only = set(recite_only) if recite_only else None
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
        self.measure_general = measure_general and general is not None  # else `general` only feeds retention
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
            ref_name = self.repeat_ref
            if ref_name is None:
                raise ValueError("passage-repeat needs a trained condition to match (self-edit, learn or a recipe)")
            ref = self.done.get((p.doc_id, ref_name))
            if ref and ref.get("train"):
                n = ref["train"]["sequences"] if ref_name == "self-edit" else ref["train"]["steps"]
            elif ref_name == "self-edit":
                n = len(self._self_edit(idx, p, True).sequences(p))
            else:
                rc = self._cfg_for(ref_name)
                n = rc.train.epochs * -(-len(self._learn_units(idx, p, rc)) // rc.train.batch_size)
            if ref_name != "self-edit":  # step-matched: one passage copy per step of the matched condition
                n = max(1, round(n / s.epochs))
            # a passage longer than the window trains as several windows (student.sequences): match those
            from student.sequences import tokenize_sequences

            windows = len(tokenize_sequences(self.rt.student.tokenizer, [passage_seq], s.max_seq_len))
            n = max(1, round(n / windows))
            return [passage_seq] * n, {"matched_to": ref_name}
        if trains_like_learn(cond.name):
            c = self._cfg_for(cond.name)
            return self._learn_units(idx, p, c), {"regime": c.continual.train_on, "loss": c.train.loss,
                                                  "retain_weight": c.train.retain.weight}
        if cond.teacher is not None:
            se = self._teacher_edit(idx, p, cond)
        else:
            se = self.externals[cond.name].self_edit(p, self.cfg.teacher.format, self.cfg.teacher.grounding)
        return se.sequences(p, s.passage_in_training), {"units": len(se.units), "dropped": len(se.dropped)}

    def _cfg_for(self, name: str):
        """The config a condition trains with: a recipe's overrides applied, else the run's own."""
        from core.config import learning_config, recipe_config

        if name.startswith("recipe:"):
            return recipe_config(self.cfg, name.split(":", 1)[1])
        return learning_config(self.cfg) if name == "learn" else self.cfg

    def _learn_units(self, idx: int, p: Passage, cfg=None) -> list[str]:
        from agent.training_data import document_units, with_masked

        cfg = cfg or self.cfg
        units = document_units(p, cfg.continual, cfg.seed + idx)
        if units is not None:
            return units
        se = self._self_edit(idx, p, guarded=True)
        return se.sequences(p, cfg.train.passage_in_training) + with_masked(p, cfg.continual, cfg.seed + idx)

    def _train(self, idx: int, p: Passage, cond: Condition, texts: list[str], adapter: str):
        """`learn` and the recipes train exactly as the continual learner does (QA pairs, distillation,
        retention); the other conditions train on raw text with the plain next-token loss, as in the paper."""
        st, s = self.rt.student, self.cfg.train
        kw = dict(seed=self.cfg.seed + idx, progress=self.progress, desc=f"[{idx}] {cond.name}")
        if not trains_like_learn(cond.name) and self.retain_all:
            return st.train_adapter(texts, adapter, settings=s.model_copy(update={"loss": "nll"}),
                                    retain=self.general.retain_targets, **kw)
        if not trains_like_learn(cond.name):
            plain = s.model_copy(update={"retain": s.retain.model_copy(update={"weight": 0.0}), "loss": "nll"})
            return st.train_adapter(texts, adapter, settings=plain, **kw)
        from agent.training_data import build_mix

        s = self._cfg_for(cond.name).train
        with st.use(None) as m:
            mix = build_mix(texts, st.tokenizer, s.loss, passage=p, model=m, k=s.retain.topk,
                            temperature=s.distill_temperature)
        retain = self.general.retain_targets if self.general is not None and s.retain.weight > 0 else None
        if s.retain.weight > 0 and retain is None:
            raise ValueError(f"{cond.name} trains with retention (train.retain.weight > 0): run it with the canary "
                             "on (continual.canary.enabled)")
        return st.train_adapter(mix.texts, adapter, settings=s, pairs=mix.pairs or None, soft=mix.soft or None,
                                retain=retain, **kw)

    def _asked(self, p: Passage) -> list[Asked]:
        return [Asked("squad", qa.question, qa.answer) for qa in p.questions] + list(self.extra.get(p.doc_id, []))

    def _answers(self, p: Passage, cond: Condition, adapter: str | None, asked: list[Asked]):
        """(served answers, oracle answers, route per question). Served: the run's router over every passage
        sends each question to its passage's adapter (own), to the untouched model (none), or to another
        passage's adapter (other: counted as a miss, since that adapter never learned this passage)."""
        from evaluation.closed_book import answer, answer_open_book

        qs = [a.question for a in asked]
        ev = self.cfg.eval
        if cond.name == "open-book":
            out = answer_open_book(self.rt.student, p.context, qs, ev.max_new_tokens, ev.batch_size)
            return out, out, ["open-book"] * len(qs)
        if adapter is None:
            out = answer(self.rt.student, None, qs, ev.max_new_tokens, ev.batch_size)
            return out, out, ["base"] * len(qs)
        oracle = answer(self.rt.student, adapter, qs, ev.max_new_tokens, ev.batch_size)
        if self.router is None:
            if not self.cfg.continual.routing.enabled:
                return oracle, oracle, ["unrouted"] * len(qs)
            from serving.routing import build_routing

            one = build_routing({p.doc_id: adapter}, {p.doc_id: f"{p.title}\n{p.context}"},
                                self.cfg.continual.routing, self.cfg.continual.canary)
            routes = ["own" if r.doc_id else "none" for r in one.routes(qs)]
        else:
            routes = [("own" if r.doc_id == p.doc_id else "none" if r.doc_id is None else "other")
                      for r in (self.router.route(q) for q in qs)]
        base_idx = [i for i, r in enumerate(routes) if r == "none"]
        base = answer(self.rt.student, None, [qs[i] for i in base_idx], ev.max_new_tokens, ev.batch_size) \
            if base_idx else []
        served = [oracle[i] if r == "own" else "" for i, r in enumerate(routes)]
        for i, a in zip(base_idx, base):
            served[i] = a
        return served, oracle, routes

    def run_unit(self, idx: int, p: Passage, cond: Condition) -> dict:
        t0 = time.perf_counter()
        texts, info = self._train_texts(idx, p, cond) if cond.name != "open-book" else (None, {})
        t_edit = time.perf_counter() - t0
        adapter, train = None, None
        if texts is not None:
            adapter = f"u{idx}-{cond.name.replace(':', '_').replace('/', '_').replace('.', '_').replace('@', '_')}"
            stats = self._train(idx, p, cond, texts, adapter)
            train = stats.summary()
        t1 = time.perf_counter()
        asked = self._asked(p)
        served, oracle, routes = self._answers(p, cond, adapter, asked)
        graded = self._grade(asked, served, oracle, routes)
        t_eval = time.perf_counter() - t1
        recited, recite_info = None, {}
        recites = self.recite and adapter is not None and (self.recite_only is None or cond.name in self.recite_only)
        if recites:
            t2 = time.perf_counter()
            memo: dict = {}  # this adapter's recitations, read again by the +recite row's canary below
            r_served, r_oracle, recitation = self._recited(p, adapter, asked, served, routes, memo)
            recited = (self._grade(asked, r_served, r_oracle, routes), time.perf_counter() - t2, recitation)
        if self.measure_general and cond.name != "open-book":
            routing = None
            if adapter and self.cfg.continual.routing.enabled:
                from serving.routing import AdapterRouting, build_routing

                routing = (AdapterRouting(self.router, {p.doc_id: adapter}) if self.router is not None else
                           build_routing({p.doc_id: adapter}, {p.doc_id: f"{p.title}\n{p.context}"},
                                         self.cfg.continual.routing, self.cfg.continual.canary))
            g = self.general.measure(self.rt.student, [adapter] if adapter else None, routing=routing)
            info = info | {"canary": g.canary.accuracy, "canary_drop": self.canary_base - g.canary.accuracy,
                           "drift": g.drift}
            if recited is not None and routing is not None:  # the +recite row's canary as that row serves it
                from evaluation.closed_book import answer_routed_recite
                from teacher.passages import recitation_parts

                cs = self.general.s
                c = self.general.routed_canary(self.rt.student, routing, lambda rt, qs: answer_routed_recite(
                    self.rt.student, rt, qs, lambda _d: recitation_parts(p), cs.max_new_tokens, cs.batch_size,
                    memo, self.cfg.serving.recite_parts))
                recite_info = {"canary": c.accuracy, "canary_drop": self.canary_base - c.accuracy}
            if routing is not None and self.unrouted:  # and the adapter's own cost, had it answered everything
                u = self.general.measure(self.rt.student, [adapter])
                info = info | {"canary_unrouted": u.canary.accuracy,
                               "canary_drop_unrouted": self.canary_base - u.canary.accuracy}
        if adapter:
            self.rt.student.drop(adapter)
            own = [r for r in routes if r in ("own", "none", "other")]
            info["routed_share"] = sum(r == "own" for r in own) / max(1, len(own))
        total = time.perf_counter() - t0
        if recited is not None:  # written first: a unit on record means its rows are too
            r_graded, r_secs, recitation = recited
            self._write(idx, p, f"{cond.name}+recite", r_graded, train,
                        {**info, **recite_info, "recitation": recitation,
                         "recitation_overlap": _overlap(recitation, p.context)},
                        {"self_edit": round(t_edit, 3), "eval": round(t_eval + r_secs, 3),
                         "recite": round(r_secs, 3), "total": round(total, 3)})
        return self._write(idx, p, cond.name, graded, train, info,
                           {"self_edit": round(t_edit, 3), "eval": round(t_eval, 3),
                            "total": round(total - (recited[1] if recited else 0.0), 3)})

    def _grade(self, asked: list[Asked], served: list[str], oracle: list[str], routes: list[str]):
        from evaluation.closed_book import grade_answers

        graded: list[tuple[Asked, object, object, str]] = []
        for set_name in dict.fromkeys(a.set for a in asked):
            idxs = [i for i, a in enumerate(asked) if a.set == set_name]
            qas = [QA(asked[i].question, asked[i].answer) for i in idxs]
            g_served = grade_answers(qas, [served[i] for i in idxs], self.judge)
            g_oracle = grade_answers(qas, [oracle[i] for i in idxs], None)
            graded += [(asked[i], gs, go, routes[i]) for i, gs, go in zip(idxs, g_served, g_oracle)]
        return graded

    def _recited(self, p: Passage, adapter: str, asked: list[Asked], served: list[str], routes: list[str],
                 memo: dict | None = None):
        """Recite-then-read with this passage's adapter: every question for the oracle; as served, the questions
        the router sends to this adapter (the others keep what they got: the base's answer, or a miss)."""
        from evaluation.closed_book import answer_recited
        from teacher.passages import recitation_parts

        ev = self.cfg.eval
        oracle, recitation = answer_recited(self.rt.student, adapter, recitation_parts(p), [a.question for a in asked],
                                            ev.max_new_tokens, ev.batch_size, self.cfg.serving.recite_parts, memo)
        out = [oracle[i] if r in ("own", "unrouted") else served[i] for i, r in enumerate(routes)]
        return out, oracle, recitation

    def _write(self, idx: int, p: Passage, name: str, graded, train, info: dict, seconds: dict) -> dict:
        n_by_set: dict[str, int] = {}
        for a, gs, go, route in graded:
            qi = n_by_set.get(a.set, 0)
            n_by_set[a.set] = qi + 1
            append_jsonl(self.records_path, {"passage": idx, "doc_id": p.doc_id, "title": p.title,
                                             "condition": name, "set": a.set, "q": qi, "route": route,
                                             **gs.to_json(), "oracle_contains": go.contains, "oracle_f1": go.f1,
                                             "oracle_answer": go.answer})
        squad = [gs for a, gs, _, _ in graded if a.set == "squad"]
        unit = {"passage": idx, "doc_id": p.doc_id, "condition": name, "train": train, **info,
                "seconds": seconds, "contains": sum(g.contains for g in squad) / max(1, len(squad))}
        append_jsonl(self.units_path, unit)
        self.done[(p.doc_id, name)] = unit
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
