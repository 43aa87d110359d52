"""General ability, measured on every version: a canary of easy questions the untouched model answers, and
the drift (KL from the untouched model) on neutral prompts.

The learned documents' probes only say whether the student kept *what it learned*; the base model scored
near 0 on them, so they cannot see the student losing what it knew before (the capital of France). The
canary answers that directly; drift is its cheap, continuous companion (one forward pass, no generation).

Files (JSON, shipped in evaluation/data, or the user's own via `continual.canary.file`):
  canary.json            [{"kind": str, "question": str, "answers": [str, ...]}, ...]
  neutral_prompts.json   {"drift": [str, ...], "retain": [str, ...]}   (disjoint: one measures, one trains)
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.closed_book import answer
from evaluation.graders import contains, normalize

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_CANARY = DATA / "canary.json"
DEFAULT_PROMPTS = DATA / "neutral_prompts.json"
DEFAULT_RETAIN_QUESTIONS = DATA / "retain_questions.json"


class CanaryError(ValueError):
    """A canary or neutral-prompts file that cannot be used; the CLI turns it into exit code 2."""


@dataclass(frozen=True)
class CanaryItem:
    question: str
    answers: tuple[str, ...]
    kind: str = "general"

    def correct(self, reply: str) -> bool:
        return any(contains(reply, a) for a in self.answers)


@dataclass
class CanaryScore:
    correct: int
    total: int
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [correct, total]
    wrong: list[tuple[str, str]] = field(default_factory=list)  # (question, reply) of missed items

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total, "by_kind": self.by_kind,
                "wrong": [list(w) for w in self.wrong[:20]]}


def _read_json(path: str | Path | None, default: Path, what: str):
    p = Path(path) if path else default
    if not p.is_file():
        raise CanaryError(f"{what} file not found: {p}")
    try:
        return p, json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CanaryError(f"{p}: not valid JSON: {e}") from e


def load_canary(path: str | Path | None = None, min_items: int = 10) -> list[CanaryItem]:
    p, raw = _read_json(path, DEFAULT_CANARY, "canary")
    if not isinstance(raw, list):
        raise CanaryError(f"{p}: top level must be a list of {{question, answers, kind}} objects")
    items, seen = [], set()
    for i, e in enumerate(raw):
        where = f"{p}: item {i}"
        if not isinstance(e, dict):
            raise CanaryError(f"{where}: must be an object")
        q, answers, kind = e.get("question"), e.get("answers"), e.get("kind", "general")
        if not isinstance(q, str) or not q.strip():
            raise CanaryError(f"{where}: 'question' must be a non-empty string")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, str) and normalize(a) for a in answers)):
            raise CanaryError(f"{where}: 'answers' must be a non-empty list of non-empty strings")
        if not isinstance(kind, str):
            raise CanaryError(f"{where}: 'kind' must be a string")
        key = normalize(q)
        if key in seen:
            raise CanaryError(f"{where}: duplicate question {q!r}")
        seen.add(key)
        items.append(CanaryItem(q.strip(), tuple(a.strip() for a in answers), kind))
    if len(items) < min_items:
        raise CanaryError(f"{p}: {len(items)} questions; a canary needs at least {min_items} to mean anything")
    return items


def load_neutral_prompts(path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(drift prompts, retain prompts): the first measure drift, the second are trained on; never the same."""
    p, raw = _read_json(path, DEFAULT_PROMPTS, "neutral prompts")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) and raw[k] for k in ("drift", "retain")):
        raise CanaryError(f"{p}: must be an object with non-empty lists 'drift' and 'retain'")
    for k in ("drift", "retain"):
        if not all(isinstance(x, str) and x.strip() for x in raw[k]):
            raise CanaryError(f"{p}: every entry of {k!r} must be a non-empty string")
    overlap = {normalize(x) for x in raw["drift"]} & {normalize(x) for x in raw["retain"]}
    if overlap:
        raise CanaryError(f"{p}: {len(overlap)} prompts are in both 'drift' and 'retain' (e.g. {sorted(overlap)[0]!r})")
    return list(raw["drift"]), list(raw["retain"])


def load_retain_questions(path: str | Path | None = None, canary: list[CanaryItem] | None = None) -> list[str]:
    """Short general questions whose base answers are kept during training; never the canary's own."""
    p, raw = _read_json(path, DEFAULT_RETAIN_QUESTIONS, "retention questions")
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x.strip() for x in raw):
        raise CanaryError(f"{p}: must be a non-empty list of non-empty strings")
    shared = {normalize(x) for x in raw} & {normalize(c.question) for c in canary or []}
    if shared:
        raise CanaryError(f"{p}: {len(shared)} questions are also canary questions (e.g. {sorted(shared)[0]!r}); "
                          "training on the canary would hide what it measures")
    return list(raw)


def retain_prompts(canary_settings, retain_settings) -> list[str]:
    """The prompts whose base answers anchor training: neutral requests as chat, optionally the same in the
    closed-book question format, and short general questions both ways."""
    from evaluation.closed_book import question_prompt

    _, neutral = load_neutral_prompts(canary_settings.prompts_file)
    prompts = list(neutral)
    if retain_settings.question_format:
        prompts += [question_prompt(q) for q in neutral]
    if retain_settings.questions:
        qs = load_retain_questions(canary_settings.retain_questions_file, load_canary(canary_settings.file))
        prompts += qs + [question_prompt(q) for q in qs]
    return prompts


def score_canary(student, adapter, items: list[CanaryItem], max_new_tokens: int = 24, batch_size: int = 64,
                 backend=None) -> CanaryScore:
    """Ask every canary question through the closed-book answer path (the same one the documents use)."""
    return grade_canary(items, answer(student, adapter, [c.question for c in items], max_new_tokens, batch_size,
                                      backend))


def grade_canary(items: list[CanaryItem], replies: list[str]) -> CanaryScore:
    score = CanaryScore(0, len(items))
    for item, reply in zip(items, replies):
        ok = item.correct(reply)
        score.correct += ok
        k = score.by_kind.setdefault(item.kind, [0, 0])
        k[0] += ok
        k[1] += 1
        if not ok:
            score.wrong.append((item.question, reply))
    return score


def reference_key(student, prompts: list[str], settings: dict) -> str:
    """Names a cache of the untouched model's answers and distributions: same weights, prompts, settings."""
    h = hashlib.sha256(json.dumps([prompts, settings], sort_keys=True).encode())
    for _, p in list(student.base.named_parameters())[:3]:
        h.update(p.detach().float().flatten()[:4096].numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class GeneralScore:
    """One version's general ability: canary accuracy and drift from the untouched model."""

    canary: CanaryScore
    drift: float

    def to_json(self) -> dict:
        return self.canary.to_json() | {"drift": self.drift}


class GeneralMonitor:
    """The canary, the drift targets and the retention targets of one process, built from the untouched
    model on first use (and cached on disk under the model cache, keyed by weights, prompts and settings)."""

    def __init__(self, settings, retain_settings, cache_dir: str | Path):
        self.s, self.rs = settings, retain_settings
        self.items = load_canary(settings.file)
        self.drift_prompts, _ = load_neutral_prompts(settings.prompts_file)
        self.cache = Path(cache_dir).expanduser() / "reference"
        self._drift = self._retain = None
        self._base_replies: dict[tuple, dict[str, str]] = {}  # Student.base_key -> {question: base reply}

    def _targets(self, student, kind: str, prompts: list[str], n: int, k: int):
        from student.soft_targets import neutral_targets

        key = reference_key(student, prompts, {"n": n, "k": k})
        with student.use(None) as base:  # the caller guarantees no merged deltas (see `prepare`)
            return neutral_targets(base, student.tokenizer, prompts, n, k, self.cache / f"{kind}-{key}.pt")

    def prepare(self, student, retain: bool = True) -> None:
        """Build the references; `student` must have no merges applied (the learner calls this in _base()).
        `retain=False` builds only what `measure` needs (the retention set is the slow one)."""
        if self._drift is None:
            self._drift = self._targets(student, "drift", self.drift_prompts, self.s.drift_max_new_tokens, self.s.topk)
        if retain and self._retain is None:
            self._retain = self._targets(student, "retain", retain_prompts(self.s, self.rs), self.rs.max_new_tokens,
                                         self.rs.topk)

    def _replies(self, student, routing, reader=None) -> list[str]:
        """Canary replies with routing, reusing the untouched model's reply for every question routed to no
        adapter: the weights those questions meet are the base's, so generating again would repeat the work
        (most of the canary routes nowhere, so this is most of a routed version's canary cost). `reader(routing,
        questions)` answers the routed ones as served (recite-then-read); default: the adapter answers."""
        qs = [c.question for c in self.items]
        memo = self._base_replies.setdefault(student.base_key, {})
        missing = [q for q in qs if q not in memo]
        if missing:
            memo.update(zip(missing, answer(student, None, missing, self.s.max_new_tokens, self.s.batch_size)))
        out = [memo[q] for q in qs]
        routed = [i for i, names in enumerate(routing.names_for(qs) if routing is not None else []) if names]
        if routed:
            sub = (reader(routing, [qs[i] for i in routed]) if reader is not None else
                   answer(student, routing, [qs[i] for i in routed], self.s.max_new_tokens, self.s.batch_size))
            for i, a in zip(routed, sub):
                out[i] = a
        return out

    @property
    def ready(self) -> bool:
        return self._drift is not None and self._retain is not None

    @property
    def retain_targets(self):
        return self._retain

    def drift(self, student, names: list[str] | None) -> float:
        """KL(base || student with `names` active) over the neutral prompts, nats per token."""
        from student.soft_targets import mean_kl

        if self._drift is None:
            raise RuntimeError("GeneralMonitor.prepare() must run on the untouched model first")
        with student.use(names or None) as m:
            return mean_kl(m, self._drift, student.tokenizer.pad_token_id)

    def canary(self, student, names: list[str] | None) -> CanaryScore:
        """The canary with `names` active (the base's replies are generated once per base weights)."""
        if not names:
            return grade_canary(self.items, self._replies(student, None))
        return score_canary(student, names, self.items, self.s.max_new_tokens, self.s.batch_size)

    def routed_canary(self, student, routing, reader=None) -> CanaryScore:
        """The canary alone, routed per question as served (no drift): a second reading of the same adapter,
        e.g. by recite-then-read, costs only the routed questions."""
        return grade_canary(self.items, self._replies(student, routing, reader))

    def measure(self, student, names: list[str] | None, served=None, backend=None, routing=None,
                reader=None) -> GeneralScore:
        """Canary through the closed-book path (on the vLLM server when `backend` is given, as `served`; routed
        per question when `routing` is given, as it is served, and read by `reader` where the service recites)
        and drift in-process with all of `names` active (the weights' distance from the base, whatever the
        routing)."""
        from student.soft_targets import mean_kl

        if self._drift is None:
            raise RuntimeError("GeneralMonitor.prepare() must run on the untouched model first")
        adapter = served if backend is not None else (routing or names or None)
        if backend is None and (routing is not None or not names):
            can = grade_canary(self.items, self._replies(student, routing, reader))
        else:
            can = score_canary(student, adapter, self.items, self.s.max_new_tokens, self.s.batch_size, backend)
        with student.use(names or None) as m:
            drift = mean_kl(m, self._drift, student.tokenizer.pad_token_id)
        return GeneralScore(can, drift)
