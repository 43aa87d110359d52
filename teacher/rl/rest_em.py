"""Teacher RL by ReST-EM (offline rounds): the teacher learns to write the self-edits the student learns from.

Round r, with teacher-v(r') (the newest version at or before r; v0 is the untouched base):
  1. N contexts (a seeded sample of the passages with QA);
  2. K candidate self-edits per context, sampled from the teacher in one batched call;
  3. each candidate: a fresh LoRA adapter on the student (the one live model: no reload, no new PEFT
     wrapper), the context's probes answered in one batch, reward = gain (- lambda * forgetting);
  4. winners (best of K, or all above a threshold) become (prompt, completion) pairs, and a new teacher
     adapter is trained on the completion tokens only -> teacher-v(r+1), an immutable version.
Every candidate is appended (fsynced) to candidates.jsonl as soon as it is measured and every finished round
to rounds.jsonl, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Callable

from core.config import SealConfig
from core.documents import Passage
from core.io import append_jsonl, read_jsonl
from student.generation import SamplingParams, generate, render_prompt
from student.runtime import Runtime
from teacher.diversity import edit_diversity
from teacher.prompts import self_edit_prompt
from teacher.rewards import Scored, select_winners
from teacher.rl.candidates import (CandidateJob, candidate_monitor, evaluate_candidate, passage_json, probe_accuracy,
                                   seed_of, settings_digest)
from teacher.rl.improve import teacher_train_settings, train_teacher_version
from teacher.versions import TeacherStore


class RLError(ValueError):
    pass


class RestEM:
    def __init__(self, rt: Runtime, passages: list[Passage], out: Path, log: Callable[[str], None] = print,
                 progress: bool = False, remote: Callable[[SealConfig], object] | None = None):
        """`remote` builds the dispatcher for `rl.evaluate_on: celery` (agent.rl_workers.CeleryCandidates): an
        object with `submit(jobs) -> handle` and `collect(handle) -> rows`."""
        self.rt, self.cfg, self.out, self.log, self.progress = rt, rt.cfg, Path(out), log, progress
        self.s = self.cfg.rl
        if self.s.evaluate_on == "celery" and remote is None:
            raise RLError("rl.evaluate_on is celery but no dispatcher was given (agent.rl_workers.CeleryCandidates)")
        self.remote = remote
        self.pool = [p for p in passages if p.questions]
        if len(self.pool) < self.s.contexts:
            raise RLError(f"need {self.s.contexts} passages with questions per round, have {len(self.pool)}")
        self.student = rt.student
        self.teacher_st = rt.teacher  # the student's own base unless teacher.model names another
        self.teachers = TeacherStore(self.out / "teachers")
        self.cands_path, self.rounds_path = self.out / "candidates.jsonl", self.out / "rounds.jsonl"
        self.cands = {(c["round"], c["doc_id"], c["k"]): c for c in read_jsonl(self.cands_path)}
        self.rounds = {r["round"]: r for r in read_jsonl(self.rounds_path)}
        self._before: dict[str, float] = {}
        self._general = None  # evaluation.canary.GeneralMonitor when the reward weighs drift or the canary
        self._digest = settings_digest(self.cfg)
        for c in self.cands.values():
            self._before[c["doc_id"]] = c["before"]
        self._write_plan()

    def _write_plan(self) -> None:
        """Every round's contexts, known up front, so a held-out evaluation can start while training runs."""
        plan = {str(r): [p.doc_id for p in self.contexts(r)] for r in range(self.s.rounds)}
        path = self.out / "contexts.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps(old | plan, indent=1))

    # -- pieces ---------------------------------------------------------------------------------------------
    def contexts(self, r: int) -> list[Passage]:
        return random.Random(seed_of(self.cfg.seed, "contexts", r)).sample(self.pool, self.s.contexts)

    def teacher_for(self, r: int) -> int:
        return max([v for v in self.teachers.versions() if v <= r], default=0)

    def before(self, p: Passage) -> float:
        if p.doc_id not in self._before:
            self._before[p.doc_id] = probe_accuracy(self.student, self.cfg, None, p)
        return self._before[p.doc_id]

    def sample(self, teacher: str | None, p: Passage, r: int) -> list[str]:
        t = self.cfg.teacher
        params = SamplingParams(max_new_tokens=t.max_new_tokens, temperature=self.s.temperature, top_p=t.top_p,
                                repetition_penalty=t.repetition_penalty, n=self.s.samples)
        with self.teacher_st.use(teacher) as m:
            return generate(m, self.teacher_st.tokenizer, [self_edit_prompt(p, t.format)], params, batch_size=1,
                            seed=seed_of(self.cfg.seed, "sample", r, p.doc_id))[0]

    # -- a round ----------------------------------------------------------------------------------------------
    def run(self, on_candidate: Callable[[dict], None] | None = None) -> list[dict]:
        for r in range(self.s.rounds):
            if r not in self.rounds:
                self.round(r, on_candidate)
        return [self.rounds[r] for r in sorted(self.rounds)]

    def round(self, r: int, on_candidate: Callable[[dict], None] | None = None) -> dict:
        tv = self.teacher_for(r)
        teacher = self.teachers.load(self.teacher_st, tv)
        ctxs = self.contexts(r)
        t_round = time.perf_counter()
        remote = self.remote(self.cfg) if self.s.evaluate_on == "celery" else None
        pending = None  # the group in flight on the workers while this process samples the next context
        for i, p in enumerate(ctxs):
            todo = [k for k in range(self.s.samples) if (r, p.doc_id, k) not in self.cands]
            if not todo:
                continue
            t0 = time.perf_counter()
            raws = self.sample(teacher, p, r)
            gen_each = (time.perf_counter() - t0) / len(raws)
            others = [q for q in ctxs[:i] if q.doc_id != p.doc_id][-self.s.retention_docs:] \
                if self.s.retention_docs else []
            jobs = [self._job(r, tv, p, k, raws[k], others, gen_each) for k in todo]
            if remote is None:
                if self._general is None:
                    self._general = candidate_monitor(self.cfg, self.student) or False
                for job in jobs:
                    self._record(evaluate_candidate(self.student, self.cfg, job, self._general or None),
                                 on_candidate)
                continue
            handle = remote.submit(jobs)
            self._collect(remote, pending, on_candidate)
            pending = handle
        self._collect(remote, pending, on_candidate)
        rows = [self.cands[(r, p.doc_id, k)] for p in ctxs for k in range(self.s.samples)]
        summary = self._train_teacher(r, tv, ctxs, rows)
        summary["seconds"] = round(time.perf_counter() - t_round, 1)
        append_jsonl(self.rounds_path, summary)
        self.rounds[r] = summary
        return summary

    def _job(self, r: int, tv: int, p: Passage, k: int, raw: str, others: list[Passage],
             gen_each: float) -> CandidateJob:
        return CandidateJob(r, tv, k, raw, passage_json(p), self.before(p),
                            [[passage_json(q), self.before(q)] for q in others], gen_each, self._digest)

    def _collect(self, remote, handle, on_candidate) -> None:
        if handle is not None:
            for row in remote.collect(handle):
                self._record(row, on_candidate)

    def _record(self, row: dict, on_candidate: Callable[[dict], None] | None) -> None:
        key = (row["round"], row["doc_id"], row["k"])
        if key in self.cands:  # a redelivered job's second answer
            return
        append_jsonl(self.cands_path, row)
        self.cands[key] = row
        if on_candidate:
            on_candidate(row)

    def _train_teacher(self, r: int, tv: int, ctxs: list[Passage], rows: list[dict]) -> dict:
        # a candidate the grounding guard emptied trained on the passage alone: its gain says nothing about
        # what the teacher wrote, so it cannot win (the teacher would learn to write droppable text)
        scored = [Scored(c["doc_id"], c["k"], c["gain"], c["forgetting"], c["reward"]) for c in rows if c["units"]]
        winners = select_winners(scored, self.s.selection, self.s.threshold)
        by_key = {(c["doc_id"], c["k"]): c for c in rows}
        summary = {"round": r, "teacher": tv, "contexts": len(ctxs), "candidates": len(rows),
                   "mean_reward": statistics.mean(c["reward"] for c in rows),
                   "mean_gain": statistics.mean(c["gain"] for c in rows),
                   "mean_dense_gain": statistics.mean(c.get("dense_gain", float("nan")) for c in rows),
                   "reward_kind": self.s.reward,
                   "reward_counts": _counts([round(c["reward"], 3) for c in rows]),
                   "empty_after_guard": sum(1 for c in rows if not c["units"]),
                   "diversity": edit_diversity(rows),  # against collapse: a teacher winning by writing less
                   "winners": len(winners), "win_rate": len({w.doc_id for w in winners}) / len(ctxs),
                   "seconds_per_candidate": statistics.mean(c["seconds"]["total"] for c in rows),
                   "overhead_share": (sum(c["seconds"]["overhead"] for c in rows)
                                      / max(1e-9, sum(c["seconds"]["total"] for c in rows)))}
        if self.teachers.versions() and max(self.teachers.versions()) > r:  # trained before a crash
            summary["new_teacher"] = r + 1
            return summary
        pairs = [self._pair(by_key[(w.doc_id, w.k)]) for w in winners]
        if self.s.winners_from == "all":
            for prev in sorted(x for x in self.rounds if x < r):
                pairs += [self._pair(c) for c in self._winner_rows(prev)]
        if not pairs:
            summary["new_teacher"] = None
            self.log(f"round {r}: no candidate beat the threshold; the teacher stays teacher-v{tv}")
            return summary
        v, stats = train_teacher_version(self.teacher_st, self.teachers, pairs, r + 1, tv, r, "base",
                                         summary["mean_reward"], teacher_train_settings(self.s.train),
                                         seed_of(self.cfg.seed, "teacher", r), self.progress, f"teacher round {r}")
        summary |= {"new_teacher": v.version, "teacher_train": stats.summary()}
        return summary

    def _pair(self, c: dict) -> tuple[str, str]:
        p = next(q for q in self.pool if q.doc_id == c["doc_id"])
        prompt = render_prompt(self.teacher_st.tokenizer, self_edit_prompt(p, self.cfg.teacher.format))
        return prompt, completion_text(c, self.s.completion, self.cfg.teacher.format)

    def _winner_rows(self, r: int) -> list[dict]:
        rows = [c for (rr, _, _), c in self.cands.items() if rr == r]
        scored = [Scored(c["doc_id"], c["k"], c["gain"], c["forgetting"], c["reward"]) for c in rows if c["units"]]
        keep = {(w.doc_id, w.k) for w in select_winners(scored, self.s.selection, self.s.threshold)}
        return [c for c in rows if (c["doc_id"], c["k"]) in keep]


def completion_text(c: dict, mode: str, fmt: str) -> str:
    """A winner as the teacher should learn to write it. `kept`: only what survived the grounding guard, so
    the teacher is not also taught the invented lines the guard threw away."""
    if mode == "raw" or not c["units"]:
        return c["raw"]
    if fmt in ("self-qa", "rewrite"):  # blocks, separated as the parser splits them
        return "\n\n".join(c["units"])
    return "\n".join(f"- {u}" for u in c["units"])


def _counts(xs: list[float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[f"{x:+.3f}"] = out.get(f"{x:+.3f}", 0) + 1
    return dict(sorted(out.items()))


def new_rl_run(cfg: SealConfig, out: Path | None) -> Path:
    from core.runs import new_run_dir

    return new_run_dir(cfg, "rl", out)
