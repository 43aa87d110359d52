"""Settings for how the teacher writes self-edits and how they are checked against the passage."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.settings.student import ModelSettings

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
    # None: the teacher is the student's base model with its own adapters (the paper's setting); or a separate
    # base model for the teacher, given like model.source (embedded:smollm2, a folder, a .gguf, tiny, ...)
    model: ModelSettings | None = None
    format: SelfEditFormat = "implications"
    samples: int = Field(2, ge=1, le=64)
    max_new_tokens: int = Field(320, ge=8, le=8192)
    temperature: float = Field(0.5, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.05, ge=1)
    grounding: GroundingSettings = GroundingSettings()


class TeacherTrainSettings(BaseModel):
    """LoRA SFT of the teacher on winning self-edits (completion tokens only)."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(32, ge=1, le=1024)
    alpha: float = Field(64, gt=0)
    learning_rate: float = Field(3e-4, gt=0, le=1)
    epochs: int = Field(3, ge=1, le=100)
    batch_size: int = Field(1, ge=1, le=64)
    max_seq_len: int = Field(1024, ge=16)


class OnlineRLSettings(BaseModel):
    """RL inside the running agent: the K self-edits it samples per document are the ReST-EM candidates."""

    model_config = ConfigDict(extra="forbid")
    samples: int = Field(1, ge=1, le=16)  # K candidates per incoming document (1 = online RL off)
    retrain_every: int = Field(20, ge=1)  # documents with measured candidates between teacher retrainings
    holdout_every: int = Field(5, ge=2)  # every n-th document (by id hash) is held back to judge new teachers
    holdout_docs: int = Field(8, ge=1)  # the most recent held-back documents used for that judgement
    min_improvement: float = 0.0  # a new teacher must beat the current one by more than this on them


class RLSettings(BaseModel):
    """ReST-EM on the teacher: sample K self-edits per context, reward = the student's gain, keep winners,
    fine-tune the teacher on them, repeat."""

    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(2, ge=1, le=100)
    contexts: int = Field(12, ge=1)  # N contexts per round
    samples: int = Field(4, ge=1, le=64)  # K candidate self-edits per context
    temperature: float = Field(0.5, gt=0)  # candidates must differ, yet survive the grounding guard (at 1.0
    #                                        SmolLM2's samples were all dropped: RESULTS.md)
    selection: Literal["best", "threshold"] = "best"  # best of K (if above threshold) | every one above it
    threshold: float = 0.0  # a winner's reward must be strictly greater than this
    retention_lambda: float = Field(0.0, ge=0)  # reward = gain - lambda * forgetting on replayed probes
    drift_lambda: float = Field(0.0, ge=0)  # reward -= drift_lambda * KL(base || student) on neutral prompts
    canary_lambda: float = Field(0.0, ge=0)  # reward -= canary_lambda * canary drop (a fraction; costs generation)
    measure_general: Literal["none", "drift", "canary"] = "none"  # measure every candidate's drift (cheap: one
    #   forward pass over the neutral prompts), or drift and the canary (adapter on every question: 151 greedy
    #   answers, ~50 s on one CPU thread), even with the lambdas at 0: `seal rl report` shows whom they would pick
    regime: Literal["paper", "product"] = "paper"  # how a candidate trains: the paper's plain next-token loss, or
    #   as the continual learner trains (+ train.retain: KL to the untouched model every step; needs the canary)
    reward: Literal["containment", "likelihood"] = "containment"  # the gain a candidate is scored by: probes
    #   answered (0/1 each) or the per-token log-likelihood of their reference answers (dense; bench/dense_reward.py)
    retention_docs: int = Field(0, ge=0)  # other contexts whose probes measure that forgetting
    winners_from: Literal["round", "all"] = "round"  # train each new teacher (from the base, as ReST-EM does)
    #                                                  on this round's winners or on every round's so far
    completion: Literal["kept", "raw"] = "kept"  # what a winner teaches: the units the grounding guard kept
    #                                             (one per line), or the raw sample with the lines it dropped
    evaluate_on: Literal["local", "celery"] = "local"  # where candidates train and answer probes: this process,
    #                                                   or `seal worker` processes (a Celery group per context)
    remote_timeout_s: float = Field(3600, gt=0)  # the longest wait for one context's group of candidates
    train: TeacherTrainSettings = TeacherTrainSettings()
    online: OnlineRLSettings = OnlineRLSettings()
