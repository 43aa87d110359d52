"""The teacher writes ARC self-edits: a JSON tool spec sampled from a prompt showing the demonstrations.

Invalid samples (no JSON, bad fields, out-of-range values) are resampled up to `max_tries` and counted, so
the rate at which a teacher writes usable specs is itself measured (and RL can raise it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from student.generation import SamplingParams, generate, render_prompt
from tasks.arc.grids import Task, grid_text
from tasks.arc.spec import SpecError, ToolSpec, parse_spec

SPEC_PROMPT = """You configure test-time training for a grid puzzle. The model will be trained on variations of \
these examples, then asked to solve a new input.

{examples}

Choose data augmentations and training settings. Answer with one JSON object only, in this form:
{{"augmentations": {{"basic": true|false, "size": true|false, "chain": true|false, "repeat": true|false}}, \
"training": {{"learning_rate": number between 0.00001 and 0.01, "epochs": integer 1-10, \
"loss": "all_tokens" or "output_tokens"}}}}
basic = rotations, flips, transposes; size = upscaling; chain = a rotation then upscaling; repeat = tiling."""


def spec_prompt(task: Task) -> str:
    ex = "\n\n".join(f"Example {i + 1}\nInput:\n{grid_text(e.input)}\nOutput:\n{grid_text(e.output)}"
                     for i, e in enumerate(task.train))
    return SPEC_PROMPT.format(examples=ex)


@dataclass
class SampledSpec:
    spec: ToolSpec | None  # None: every try was invalid
    raw: str  # the text the spec was parsed from (or the last invalid one)
    tries: int
    invalid: list[str] = field(default_factory=list)  # the reason for each invalid sample


def sample_specs(model, tokenizer, task: Task, k: int, s, seed: int) -> list[SampledSpec]:
    """K self-edits for a task, each resampled until valid or out of tries (`s`: ArcSettings)."""
    params = SamplingParams(max_new_tokens=s.spec_max_new_tokens, temperature=s.temperature, top_p=1.0, n=k)
    prompt = spec_prompt(task)
    out = [SampledSpec(None, "", 0) for _ in range(k)]
    for attempt in range(s.max_tries):
        todo = [i for i, x in enumerate(out) if x.spec is None]
        if not todo:
            break
        texts = generate(model, tokenizer, [prompt], params, batch_size=1, seed=seed * 1009 + attempt)[0]
        for i, text in zip(todo, texts):
            x = out[i]
            x.tries += 1
            x.raw = text
            try:
                x.spec = parse_spec(text)
            except SpecError as e:
                x.invalid.append(str(e))
    return out


def spec_pair(tokenizer, task: Task, spec: ToolSpec) -> tuple[str, str]:
    """(rendered prompt, canonical spec JSON): what a winning spec teaches the teacher (loss on the spec)."""
    return render_prompt(tokenizer, spec_prompt(task)), spec.model_dump_json()
