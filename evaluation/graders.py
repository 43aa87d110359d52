"""Graders for closed-book answers: SQuAD EM/F1, gold containment, a recitation control, an optional judge."""
from __future__ import annotations

import os
import re
import string
from collections import Counter
from typing import Protocol

import httpx

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize(s: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, squeeze whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalize(pred) == normalize(gold))


def f1(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def _contains(haystack: str, needle: str) -> bool:
    n = normalize(needle)
    return bool(n) and f" {n} " in f" {normalize(haystack)} "


def contains(pred: str, gold: str) -> float:
    """Normalized containment on word boundaries, so gold '4' does not match '1940'."""
    return float(_contains(pred, gold))


def recites_other(pred: str, gold: str, other_golds: list[str], question: str = "") -> float:
    """1 if the answer contains the gold answer of a *different* question on the same passage.

    Ignored: other golds that overlap this question's own gold (one contains the other), and other golds
    the question itself mentions (echoing the question is not recitation).
    """
    own = normalize(gold)
    for o in other_golds:
        on = normalize(o)
        if not on or on in own or own in on or (question and _contains(question, o)):
            continue
        if _contains(pred, o):
            return 1.0
    return 0.0


class Judge(Protocol):
    def grade(self, question: str, gold: str, answer: str) -> bool | None:
        """True/False, or None when the judge could not grade (never counted as wrong)."""


JUDGE_PROMPT = (
    "You are grading an answer to a question. The gold answer is correct.\n"
    "Question: {q}\nGold answer: {g}\nStudent answer: {a}\n"
    "Does the student answer convey the gold answer without contradicting it? Reply with only yes or no."
)


def _verdict(text: str) -> bool | None:
    t = text.strip().lower()
    if t.startswith("yes"):
        return True
    if t.startswith("no"):
        return False
    return None


class OpenAIJudge:
    """Any OpenAI-compatible chat endpoint (a hosted model, a local vLLM). Failures -> None (ungraded)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0):
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s)

    @classmethod
    def from_settings(cls, s) -> "OpenAIJudge":
        if not s.url or not s.model:
            raise ValueError("eval.judge.kind=openai needs eval.judge.url and eval.judge.model")
        return cls(s.url, s.model, os.environ.get(s.api_key_env), s.timeout_s)

    def grade(self, question: str, gold: str, answer: str) -> bool | None:
        body = {
            "model": self.model, "temperature": 0, "max_tokens": 3,
            "messages": [{"role": "user", "content": JUDGE_PROMPT.format(q=question, g=gold, a=answer)}],
        }
        try:
            r = self.client.post(self.url, json=body, headers=self.headers)
            r.raise_for_status()
            return _verdict(r.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            return None


class LocalJudge:
    """The loaded base model as judge (weak on a 135M model, but offline); unparseable replies -> None."""

    def __init__(self, model_ctx, tokenizer):
        self.model_ctx, self.tokenizer = model_ctx, tokenizer

    def grade(self, question: str, gold: str, answer: str) -> bool | None:
        from student.generation import SamplingParams, generate

        with self.model_ctx() as m:
            out = generate(m, self.tokenizer, [JUDGE_PROMPT.format(q=question, g=gold, a=answer)],
                           SamplingParams(max_new_tokens=3))
        return _verdict(out[0][0])
