"""Settings for how the teacher writes self-edits and how they are checked against the passage."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SelfEditFormat = Literal["implications", "implications-long", "rewrite", "self-qa"]


class GroundingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_support: float = Field(0.75, ge=0, le=1)
    require_entities: bool = True
    min_content_words: int = Field(3, ge=0)
    window_sentences: int = Field(2, ge=0)  # support is measured within this many adjacent sentences; 0 = whole passage


class TeacherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: SelfEditFormat = "implications"
    samples: int = Field(2, ge=1, le=64)
    max_new_tokens: int = Field(320, ge=8, le=8192)
    temperature: float = Field(0.5, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.05, ge=1)
    grounding: GroundingSettings = GroundingSettings()
