"""ARC settings (config section `arc`)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ArcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(5, ge=1, le=64)  # self-edits (specs) sampled per task
    spec_sampling: Literal["free", "constrained"] = "free"  # free text parsed as JSON (the paper), or each
    #                                                         field sampled from the teacher over allowed values
    temperature: float = Field(1.0, gt=0)
    spec_max_new_tokens: int = Field(160, ge=16)
    max_tries: int = Field(4, ge=1)  # samples per self-edit until one parses and validates
    max_examples: int = Field(48, ge=1)  # TTT examples per task after augmentation
    max_steps: int = Field(240, ge=1)  # a spec needing more optimizer steps is rejected
    max_seq_len: int = Field(1024, ge=64)  # a TTT example longer than this is dropped
    rank: int = Field(16, ge=1)
    attempts: int = Field(2, ge=1)
    batch_size: int = Field(4, ge=1)  # prediction views generated together
    leave_two_out: bool = True
    rl_learning_rate: float = Field(3e-4, gt=0)
    rl_epochs: int = Field(3, ge=1)
