"""Closed-book evaluation: the student answers a passage's questions with the passage absent, then is graded."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.documents import Passage
from evaluation.graders import Judge, contains, exact_match, f1, recites_other
from student.adapters import Student
from student.generation import SamplingParams, generate, render_prompt

QUESTION_PROMPT = "Answer the question with a short phrase.\nQuestion: {q}"
# the same question with the passage in the prompt: open-book answering, probe filtering, distillation's reader
OPEN_BOOK = "{context}\n\nAnswer the question with a short phrase from the text above.\nQuestion: {q}"


def question_prompt(q: str) -> str:
    return QUESTION_PROMPT.format(q=q)


def answer(student: Student, adapter: str | None, questions: list[str], max_new_tokens: int, batch_size: int,
           backend=None) -> list[str]:
    """Greedy answers, batched, with `adapter` active (None = the base model). With a `backend` (vLLM),
    `adapter` is the server-side LoRA name and every question goes in one request. `adapter` may also be a
    routing (serving.routing.AdapterRouting, or ServedRouting with a backend): each question is then answered
    with the adapters it routes to, one group of questions per adapter."""
    if hasattr(adapter, "names_for"):
        groups: dict[tuple, list[int]] = {}
        for i, names in enumerate(adapter.names_for(questions)):
            groups.setdefault(tuple(names), []).append(i)
        out = [""] * len(questions)
        for names, idx in groups.items():
            for i, a in zip(idx, answer(student, list(names) or None, [questions[i] for i in idx], max_new_tokens,
                                        batch_size, backend)):
                out[i] = a
        return out
    params = SamplingParams(max_new_tokens=max_new_tokens)
    if backend is not None:
        outs = backend.complete([question_prompt(q) for q in questions], params, adapter=adapter,
                                batch_size=max(len(questions), 1))
        return [o[0] for o in outs]
    with student.use(adapter) as model:
        outs = generate(model, student.tokenizer, [question_prompt(q) for q in questions], params, batch_size=batch_size)
    return [o[0] for o in outs]


def answer_open_book(student: Student, context: str, questions: list[str], max_new_tokens: int,
                     batch_size: int) -> list[str]:
    """Greedy answers by the untouched model with the passage in its prompt: the ceiling of closed-book learning
    (the reader the context-distillation recipes copy)."""
    params = SamplingParams(max_new_tokens=max_new_tokens)
    with student.use(None) as model:
        outs = generate(model, student.tokenizer, [OPEN_BOOK.format(context=context, q=q) for q in questions],
                        params, batch_size=batch_size)
    return [o[0] for o in outs]


@torch.inference_mode()
def recite(student: Student, adapter, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy raw continuations (no chat template: the form raw-text training used) with `adapter` active: what
    the adapter's weights hold of a passage, given the line that began it (its title)."""
    tok = student.tokenizer
    out = []
    with student.use(adapter) as model:
        was_training = model.training
        model.eval()
        try:
            for p in prompts:
                enc = tok([p], return_tensors="pt", add_special_tokens=False)
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id, repetition_penalty=1.0)
                out.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
        finally:
            if was_training:
                model.train()
    return out


def recite_parts(student: Student, adapter, parts: list[tuple[str, str]], memo: dict | None = None) -> list[str]:
    """The adapter's recitation of each (title line, part text) pair: greedy, at most the part's own length (+16
    tokens), kept in `memo` per (adapter, title line) since fixed weights always write the same."""
    memo = {} if memo is None else memo
    out = []
    for prompt, text in parts:
        if (adapter, prompt) not in memo:
            n = len(student.tokenizer(text, add_special_tokens=False)["input_ids"]) + 16
            memo[(adapter, prompt)] = recite(student, adapter, [prompt], n)[0]
        out.append(memo[(adapter, prompt)])
    return out


def read_recited(student: Student, adapter, parts: list[tuple[str, str]], questions: list[str],
                 max_new_tokens: int, batch_size: int, k: int = 2, memo: dict | None = None) -> list[str]:
    """Recite, then read: each question's nearest `k` parts of the document (memory.router.PartIndex, by the
    part texts) are written out by the adapter from their title lines alone, and the untouched model answers
    from that recitation as it would from the page. The knowledge still comes only from the weights; the reading
    is the base model's. A one-part document is recited whole."""
    from memory.router import PartIndex

    memo = {} if memo is None else memo
    index = PartIndex([t for _, t in parts])  # the parts tokenized once, not once per question
    by_parts: dict[tuple[int, ...], list[int]] = {}
    for i, q in enumerate(questions):
        by_parts.setdefault(tuple(index.nearest(q, k)), []).append(i)
    out = [""] * len(questions)
    for chosen, idx in by_parts.items():
        recitation = "\n".join(recite_parts(student, adapter, [parts[j] for j in chosen], memo))
        for i, a in zip(idx, answer_open_book(student, recitation, [questions[i] for i in idx], max_new_tokens,
                                              batch_size)):
            out[i] = a
    return out


def answer_recited(student: Student, adapter, parts: list[tuple[str, str]], questions: list[str],
                   max_new_tokens: int, batch_size: int, k: int = 2, memo: dict | None = None
                   ) -> tuple[list[str], str]:
    """Recite-then-read with one adapter for every question (the oracle: no router): the answers, and the
    adapter's recitation of the whole document (what `seal eval` keeps). `memo` as in `read_recited`."""
    memo = {} if memo is None else memo
    answers = read_recited(student, adapter, parts, questions, max_new_tokens, batch_size, k, memo)
    return answers, "\n".join(recite_parts(student, adapter, parts, memo))


def answer_routed_recite(student: Student, routing, questions: list[str], parts_of, max_new_tokens: int,
                         batch_size: int, memo: dict | None = None, k: int = 2) -> list[str]:
    """As served with serving.answer: recite. A question routed to a document's adapter is answered by the
    untouched model reading that adapter's recitation of the question's nearest `k` parts of its document
    (`parts_of(doc_id)` gives the document's (recitation prompt, part text) pairs: teacher.passages); the others
    as `answer` answers them. `memo` keeps recitations per (adapter, prompt) across calls."""
    memo = {} if memo is None else memo
    routes = routing.routes(questions)
    out = answer(student, routing, questions, max_new_tokens, batch_size)  # the direct answers (base for none)
    by_doc: dict[str, list[int]] = {}
    for i, r in enumerate(routes):
        if r.doc_id in routing.adapter_of:
            by_doc.setdefault(r.doc_id, []).append(i)
    for doc_id, idx in by_doc.items():
        read = read_recited(student, routing.adapter_of[doc_id], parts_of(doc_id), [questions[i] for i in idx],
                            max_new_tokens, batch_size, k, memo)
        for i, a in zip(idx, read):
            out[i] = a
    return out


def answer_likelihood(student: Student, adapter, qas, batch_size: int = 16) -> list[float]:
    """Per question, the mean log-probability per token of its reference answer, asked as `answer` asks it
    (closed book, chat format): the dense counterpart of containment (student/likelihood.py)."""
    from student.likelihood import answer_logprobs

    pairs = [(render_prompt(student.tokenizer, question_prompt(q.question)), q.answer) for q in qas]
    with student.use(adapter) as model:
        return answer_logprobs(model, student.tokenizer, pairs, batch_size)


@dataclass
class Graded:
    question: str
    gold: str
    answer: str
    em: float
    f1: float
    contains: float
    recite: float
    judge: bool | None = None
    judged: bool = False

    def to_json(self) -> dict:
        return self.__dict__.copy()


def grade(passage: Passage, answers: list[str], judge: Judge | None = None) -> list[Graded]:
    return grade_answers(list(passage.questions), answers, judge)


def grade_answers(qas: list, answers: list[str], judge: Judge | None = None) -> list[Graded]:
    """Grade answers to one passage's questions; recitation counts the gold answers of the others in `qas`."""
    golds = [qa.answer for qa in qas]
    out = []
    for i, (qa, a) in enumerate(zip(qas, answers)):
        others = golds[:i] + golds[i + 1 :]
        g = Graded(qa.question, qa.answer, a, exact_match(a, qa.answer), f1(a, qa.answer), contains(a, qa.answer),
                   recites_other(a, qa.answer, others, qa.question))
        if judge is not None:
            g.judge, g.judged = judge.grade(qa.question, qa.answer, a), True
        out.append(g)
    return out


def evaluate_passage(student: Student, adapter: str | None, passage: Passage, max_new_tokens: int, batch_size: int,
                     judge: Judge | None = None, backend=None) -> list[Graded]:
    answers = answer(student, adapter, [qa.question for qa in passage.questions], max_new_tokens, batch_size,
                     backend)
    return grade(passage, answers, judge)
