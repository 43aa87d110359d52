"""ARC conditions, success rates, and ReST-EM over tool specs; every attempt appended as it finishes.

Conditions (the paper's four):
  icl              in-context only: the demonstrations in the prompt, no training
  ttt              TTT with specs sampled from the untrained teacher (K per task)
  teacher:RUN@V    TTT with specs sampled from an RL-trained teacher version
  oracle           TTT with every augmentation and a fixed good setting (ORACLE)
Success rate = solved attempts / sampled self-edits (the paper's metric); also tasks solved by >= 1.
"""
from __future__ import annotations

import statistics
import time
import zlib
from pathlib import Path
from typing import Callable

from core.io import append_jsonl, atomic_write_json, read_jsonl
from tasks.arc.grids import Task
from tasks.arc.solve import run_spec
from tasks.arc.spec import ORACLE, ToolSpec
from tasks.arc.tool_spec import sample_constrained, sample_specs, spec_pair
from teacher.rewards import Scored, select_winners
from teacher.rl.improve import teacher_train_settings, train_teacher_version
from teacher.versions import TeacherStore


class ArcError(ValueError):
    pass


def parse_arc_conditions(spec: str) -> list[str]:
    out = []
    for c in (x.strip() for x in spec.split(",") if x.strip()):
        if c in ("icl", "ttt", "oracle"):
            out.append(c)
        elif c.startswith("teacher:") and "@" in c:
            run, v = c[len("teacher:"):].rsplit("@", 1)
            if not v.isdigit() or not (Path(run) / "teachers").is_dir():
                raise ArcError(f"{c}: expected teacher:RUN@VERSION with RUN an `seal arc rl` run")
            if int(v) and int(v) not in TeacherStore(Path(run) / "teachers").versions():
                raise ArcError(f"{c}: no teacher-v{v} in {run}")
            out.append(c)
        else:
            raise ArcError(f"unknown ARC condition {c!r} (icl, ttt, oracle, teacher:RUN@V)")
    if not out:
        raise ArcError("no conditions")
    return out


class ArcRunner:
    """Shared by evaluation and RL: sample specs from a teacher (version), run them, append results."""

    def __init__(self, rt, out: Path, log: Callable[[str], None] = print):
        self.rt, self.cfg, self.s, self.out, self.log = rt, rt.cfg, rt.cfg.arc, Path(out), log
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "attempts.jsonl"
        self.done = {(a["task"], a["condition"], a["k"]): a for a in read_jsonl(self.path)}

    def _teacher(self, run: Path | None, version: int):
        """A context with the teacher model (base, or a trained version's adapter active)."""
        st = self.rt.teacher
        name = None
        if run is not None and version:
            name = TeacherStore(run / "teachers").load(st, version)
        return st.use(name)

    def specs_for(self, task: Task, condition: str, k: int, seed: int) -> list[dict]:
        if condition == "oracle":
            return [{"spec": ORACLE, "tries": 0, "invalid": [], "raw": ""}]
        run, version = None, 0
        if condition.startswith("teacher:"):
            r, v = condition[len("teacher:"):].rsplit("@", 1)
            run, version = Path(r), int(v)
        sampler = sample_constrained if self.s.spec_sampling == "constrained" else sample_specs
        with self._teacher(run, version) as m:
            got = sampler(m, self.rt.teacher.tokenizer, task, k, self.s, seed)
        return [{"spec": g.spec, "tries": g.tries, "invalid": g.invalid, "raw": g.raw} for g in got]

    def attempt(self, task: Task, condition: str, k: int, sampled: dict | None, seed: int) -> dict:
        t0 = time.perf_counter()
        spec = None if sampled is None else sampled["spec"]
        if condition != "icl" and spec is None:
            row = {"solved": False, "rejected": "no valid spec in " + str(sampled["tries"]) + " tries"}
        else:
            a = run_spec(self.rt.student, task, spec, self.s, seed)
            row = {"solved": a.solved, "predictions": a.predictions, "ttt_examples": a.ttt_examples,
                   "steps": a.steps, "seconds": a.seconds, "data": a.data, "rejected": a.rejected}
        row = {"task": task.id, "condition": condition, "k": k,
               "spec": spec.model_dump() if isinstance(spec, ToolSpec) else None,
               "tries": sampled["tries"] if sampled else 0, "invalid": sampled["invalid"] if sampled else [],
               "raw": sampled["raw"] if sampled else "", **row,
               "total_seconds": round(time.perf_counter() - t0 + (sampled or {}).get("sample_seconds", 0), 2)}
        append_jsonl(self.path, row)
        self.done[(task.id, condition, k)] = row
        return row

    def run_condition(self, task: Task, condition: str, k: int, seed: int) -> list[dict]:
        n = 1 if condition in ("icl", "oracle") else k
        todo = [i for i in range(n) if (task.id, condition, i) not in self.done]
        if todo:
            if condition == "icl":
                sampled = [None]
            else:
                t0 = time.perf_counter()
                sampled = self.specs_for(task, condition, n, seed)
                for x in sampled:
                    x["sample_seconds"] = (time.perf_counter() - t0) / len(sampled)
            for i in todo:
                row = self.attempt(task, condition, i, sampled[i], seed * 7919 + i)
                self.log(f"{task.id} {condition:24s} k={i} solved={row['solved']} "
                         f"{row.get('rejected') or ''} ({row['total_seconds']:.0f}s)")
        return [self.done[(task.id, condition, i)] for i in range(n)]


def task_seed(seed: int, task_id: str) -> int:
    """Each task its own sampling and training seed (the same in every run with the same config)."""
    return (zlib.crc32(task_id.encode()) ^ seed) & 0x7FFFFFFF


def evaluate(rt, tasks: list[Task], conditions: list[str], out: Path, log=print) -> dict:
    runner = ArcRunner(rt, out, log)
    for t in tasks:
        for c in conditions:
            runner.run_condition(t, c, rt.cfg.arc.samples, task_seed(rt.cfg.seed, t.id))
        write_summary(out, conditions)
    return write_summary(out, conditions)


def summarize(rows: list[dict], conditions: list[str]) -> dict:
    out = {}
    for c in conditions:
        rs = [r for r in rows if r["condition"] == c]
        if not rs:
            continue
        tasks = sorted({r["task"] for r in rs})
        solved_tasks = sorted({r["task"] for r in rs if r["solved"]})
        secs = [r["total_seconds"] for r in rs]
        out[c] = {"attempts": len(rs), "solved_attempts": sum(r["solved"] for r in rs),
                  "success_rate": sum(r["solved"] for r in rs) / len(rs), "tasks": len(tasks),
                  "tasks_solved": len(solved_tasks), "solved": solved_tasks,
                  "invalid_samples": sum(len(r["invalid"]) for r in rs),
                  "no_valid_spec": sum(1 for r in rs if (r.get("rejected") or "").startswith("no valid spec")),
                  "over_budget": sum(1 for r in rs if "budget" in (r.get("rejected") or "")),
                  "seconds_per_self_edit": statistics.mean(secs),
                  "seconds_per_task": sum(secs) / len(tasks)}
    return out


def write_summary(out: Path, conditions: list[str]) -> dict:
    summary = summarize(read_jsonl(out / "attempts.jsonl"), conditions)
    atomic_write_json(out / "summary.json", summary)  # shards of one run may write it at the same time
    return summary


def rl(rt, tasks: list[Task], out: Path, rounds: int, log=print) -> list[dict]:
    """ReST-EM over specs: per round, K specs per task from the current teacher, reward = solved (binary),
    SFT a new teacher version on (prompt -> spec JSON) of the winners, loss on the spec only."""
    from core.settings.student import TrainSettings

    store = TeacherStore(out / "teachers")
    summaries = [r for r in read_jsonl(out / "rounds.jsonl")]
    for r in range(len(summaries), rounds):
        v = max([x for x in store.versions() if x <= r], default=0)
        cond = f"teacher:{out}@{v}"
        runner = ArcRunner(rt, out / f"round{r}", log)
        rows = [row for t in tasks
                for row in runner.run_condition(t, cond, rt.cfg.arc.samples, task_seed(rt.cfg.seed + r, t.id))]
        # the shared selection rule (teacher/rewards.py): reward = solved (0/1), every solved sample wins
        by_task = {t.id: t for t in tasks}
        scored = [Scored(row["task"], i, float(row["solved"]), 0.0, float(row["solved"]))
                  for i, row in enumerate(rows) if row["spec"]]
        wins = [(by_task[rows[w.k]["task"]], ToolSpec.model_validate(rows[w.k]["spec"]), rows[w.k]["raw"])
                for w in sorted(select_winners(scored, "threshold", 0.5), key=lambda w: w.k)]
        summary = {"round": r, "teacher": v, "attempts": len(rows), "solved": sum(x["solved"] for x in rows),
                   "success_rate": sum(x["solved"] for x in rows) / max(1, len(rows)),
                   "invalid_samples": sum(len(x["invalid"]) for x in rows), "winners": len(wins), "new_teacher": None}
        if wins and r + 1 not in store.versions():
            st = rt.teacher
            # constrained: the text the teacher's choices were scored in; free: the canonical JSON
            pairs = [spec_pair(st.tokenizer, t, s, raw if rt.cfg.arc.spec_sampling == "constrained" else None)
                     for t, s, raw in wins]
            settings = teacher_train_settings(rt.cfg.rl.train, learning_rate=rt.cfg.arc.rl_learning_rate,
                                              epochs=rt.cfg.arc.rl_epochs, batch_size=TrainSettings().batch_size)
            new, _ = train_teacher_version(st, store, pairs, r + 1, v, r, "base", summary["success_rate"], settings,
                                           rt.cfg.seed + r)
            summary["new_teacher"] = new.version
        elif r + 1 in store.versions():
            summary["new_teacher"] = r + 1
        append_jsonl(out / "rounds.jsonl", summary)
        summaries.append(summary)
        log(f"round {r}: teacher-v{v} success {summary['success_rate']:.2f}, {len(wins)} winners -> "
            f"{'teacher-v%d' % summary['new_teacher'] if summary['new_teacher'] else 'teacher unchanged'}")
    return summaries
