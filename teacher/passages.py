"""A passage as raw training text, in titled parts that fit the student's window (what raw-text training learns,
and what recite-then-read asks the adapter to write out again, part by part, from each part's title line)."""
from __future__ import annotations

from core.documents import Passage


def passage_texts(passage: Passage, max_words: int = 300) -> list[str]:
    """The passage as raw training text: whole when it fits, else consecutive runs of whole sentences of at most
    `max_words` words, each titled with its part (a sequence past the window would be cut and its tail never
    learned). A SQuAD paragraph is one part, exactly `title + newline + context` as before."""
    from teacher.cloze import sentences

    if len(passage.context.split()) <= max_words:
        return [f"{passage.title}\n{passage.context}"]
    parts, cur = [], []
    for sent in sentences(passage.context) or [passage.context]:
        words = sent.split()
        while len(words) > max_words:  # one sentence longer than a part: cut it between words
            if cur:
                parts.append(cur)
                cur = []
            parts.append(words[:max_words])
            words = words[max_words:]
        if cur and len(cur) + len(words) > max_words:
            parts.append(cur)
            cur = []
        cur = cur + words
    if cur:
        parts.append(cur)
    return [f"{passage.title} (part {i + 1} of {len(parts)})\n{' '.join(w)}" for i, w in enumerate(parts)]


def recitation_parts(passage: Passage) -> list[tuple[str, str]]:
    """(the title line an adapter continues, the part it should write out) for each part of the passage."""
    return list(zip(recitation_prompts(passage), passage_texts(passage)))


def recitation_prompts(passage: Passage) -> list[str]:
    """Each part's title line: what the adapter is asked to continue when it recites the passage."""
    return [t.split("\n", 1)[0] + "\n" for t in passage_texts(passage)]
