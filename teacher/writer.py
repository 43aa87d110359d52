"""The teacher writes self-edits for passages by sampling from a causal LM."""
from __future__ import annotations

from core.documents import Passage
from core.settings.teacher import TeacherSettings
from student.generation import SamplingParams, generate
from teacher.prompts import self_edit_prompt
from teacher.self_edit import SelfEdit, build_self_edit


class TeacherWriter:
    def __init__(self, model, tokenizer, settings: TeacherSettings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    def sample_raw(self, passages: list[Passage], seed: int, model=None, backend=None) -> list[list[str]]:
        """`model` overrides the writer's own for this call (e.g. the student's base with adapters disabled);
        `backend` (a vLLM server) samples all K for every passage in one request instead."""
        s = self.settings
        params = SamplingParams(
            max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
            repetition_penalty=s.repetition_penalty, n=s.samples,
        )
        prompts = [self_edit_prompt(p, s.format) for p in passages]
        if backend is not None:
            return backend.complete(prompts, params, adapter=None, seed=seed, batch_size=len(prompts))
        return generate(model or self.model, self.tokenizer, prompts, params, batch_size=max(1, 8 // s.samples), seed=seed)

    def write(self, passage: Passage, seed: int) -> SelfEdit:
        raw = self.sample_raw([passage], seed)[0]
        return build_self_edit(passage, raw, self.settings.format, self.settings.grounding)
