"""The teacher writes ARC self-edits: a JSON tool spec sampled from a prompt showing the demonstrations.

Invalid samples (no JSON, bad fields, out-of-range values) are resampled up to `max_tries` and counted, so
the rate at which a teacher writes usable specs is itself measured (and RL can raise it).
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import torch

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


def spec_pair(tokenizer, task: Task, spec: ToolSpec, text: str | None = None) -> tuple[str, str]:
    """(rendered prompt, spec text): what a winning spec teaches the teacher (loss on the spec only). `text`
    defaults to the canonical JSON."""
    return render_prompt(tokenizer, spec_prompt(task)), text or spec.model_dump_json()


# -- constrained sampling: every field's value drawn from the teacher's own distribution over the allowed ones
CHOICES: list[tuple[str, str, list]] = [
    ("augmentations", "basic", [True, False]),
    ("augmentations", "size", [True, False]),
    ("augmentations", "chain", [True, False]),
    ("augmentations", "repeat", [True, False]),
    ("training", "learning_rate", [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]),
    ("training", "epochs", [1, 2, 3, 4, 5]),
    ("training", "loss", ["all_tokens", "output_tokens"]),
]


def _value_text(v) -> str:
    return json.dumps(v)


@torch.inference_mode()
def _option_logprobs(model, tokenizer, prefix: str, options: list[str]) -> list[float]:
    """log p(option | prefix) under the model, for each option text (summed over its tokens)."""
    p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    seqs = [p_ids + tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    out = []
    for i, s in enumerate(seqs):
        out.append(float(sum(logp[i, t - 1, s[t]] for t in range(len(p_ids), len(s)))))
    return out


def sample_constrained(model, tokenizer, task: Task, k: int, s, seed: int) -> list[SampledSpec]:
    """K specs, always valid: the JSON is written field by field and each value is sampled from the
    teacher's softmax (at `s.temperature`) over the allowed values given everything written so far. RL on
    the spec text shifts exactly these choices."""
    rng = random.Random(seed)
    base = render_prompt(tokenizer, spec_prompt(task))
    out = []
    for _ in range(k):
        values: dict[str, dict] = {"augmentations": {}, "training": {}}
        text = ""
        for section, key, options in CHOICES:
            prefix = text + ("{" if not text else ", ")
            if key == "basic":
                prefix += '"augmentations": {'
            elif key == "learning_rate":
                prefix = text + '}, "training": {'
            prefix += f'"{key}": '
            lps = _option_logprobs(model, tokenizer, base + prefix, [_value_text(o) for o in options])
            top = max(lps)
            weights = [math.exp((lp - top) / s.temperature) for lp in lps]
            choice = rng.choices(range(len(options)), weights)[0]
            values[section][key] = options[choice]
            text = prefix + _value_text(options[choice])
        text += "}}"
        out.append(SampledSpec(ToolSpec.model_validate(values), text, 1))
    return out
