"""The ARC self-edit: a tool specification. Which augmentations build the test-time training data and
which optimisation settings train on it. Text self-edits (documents) and tool specs share one shape: a
self-edit is training data and/or training settings; here the teacher writes only the recipe.
"""
from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SpecError(ValueError):
    """A spec that is not valid JSON, breaks the schema, or would train too long (the reason says which)."""


class AugmentationChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    basic: bool = False  # rotations, flips, transpose, reflections
    size: bool = False  # upscale both sides / height / width by 2
    chain: bool = False  # a geometric transform then a size change
    repeat: bool = False  # tiling
    colours: int = Field(0, ge=0, le=8)  # colour permutations (0 = none)
    reorder: bool = False  # permute the demonstrations' order


class TrainingChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(1e-4, gt=0, le=1e-2)
    epochs: int = Field(2, ge=1, le=10)
    loss: Literal["all_tokens", "output_tokens"] = "output_tokens"


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    augmentations: AugmentationChoice = AugmentationChoice()
    training: TrainingChoice = TrainingChoice()

    def key(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)


ORACLE = ToolSpec(augmentations=AugmentationChoice(basic=True, size=True, chain=True, repeat=True),
                  training=TrainingChoice(learning_rate=1e-3, epochs=3, loss="output_tokens"))

_JSON = re.compile(r"\{.*\}", re.S)


def parse_spec(text: str) -> ToolSpec:
    """The first JSON object in the teacher's text, validated. Raises SpecError with the reason."""
    m = _JSON.search(text)
    if not m:
        raise SpecError("no JSON object in the output")
    raw = m.group(0)
    for end in range(len(raw), 0, -1):  # the longest prefix that parses: models trail text after the JSON
        if raw[end - 1] != "}":
            continue
        try:
            data = json.loads(raw[:end])
            break
        except json.JSONDecodeError:
            continue
    else:
        raise SpecError("the JSON object does not parse")
    if not isinstance(data, dict):
        raise SpecError("the spec must be a JSON object")
    try:
        return ToolSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise SpecError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def check_budget(spec: ToolSpec, examples: int, max_steps: int) -> None:
    """Reject a spec whose training would take more optimizer steps than the budget (the reason says so)."""
    steps = examples * spec.training.epochs
    if steps > max_steps:
        raise SpecError(f"would train {steps} steps ({examples} examples x {spec.training.epochs} epochs) "
                        f"> budget {max_steps}")
