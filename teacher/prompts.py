"""Self-edit prompt formats. The wording asks for passage-faithful output because a small teacher invents."""
from __future__ import annotations

from core.documents import Passage
from core.settings.teacher import SelfEditFormat

_PROMPTS: dict[str, str] = {
    # Short and concrete: SmolLM2-135M ignores long instructions and drifts into invented stories.
    "implications": (
        "Title: {title}\n{context}\n\n"
        "Write 8 short true statements based on this text. Use the exact names and numbers from the text."
    ),
    "implications-long": (
        "Read the passage and list as many statements as you can that are true according to it: its facts, "
        "their consequences, and how they relate to each other. Write at least ten lines, one complete sentence "
        "per line, and copy names, dates and numbers exactly from the passage.\n\n"
        "Title: {title}\nPassage: {context}\n\nStatements:"
    ),
    "rewrite": (
        "Rewrite the passage three times in different words. Each version must keep every name, date and number "
        "of the original and add nothing new. Separate the versions with a blank line.\n\n"
        "Title: {title}\nPassage: {context}\n\nRewrites:"
    ),
    "self-qa": (
        "Write question and answer pairs that check whether someone has learned the passage. Each answer must be "
        "a short phrase copied from the passage. Use this format for every pair:\n"
        "Q: <question>\nA: <answer>\n\n"
        "Title: {title}\nPassage: {context}\n\nPairs:"
    ),
}


def self_edit_prompt(passage: Passage, fmt: SelfEditFormat) -> str:
    try:
        template = _PROMPTS[fmt]
    except KeyError as e:
        raise ValueError(f"unknown self-edit format {fmt!r}; choose one of {sorted(_PROMPTS)}") from e
    return template.format(title=passage.title, context=passage.context)


def formats() -> list[str]:
    return sorted(_PROMPTS)
