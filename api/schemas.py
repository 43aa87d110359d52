"""Request bodies, validated at the boundary (every field bounded, unknown OpenAI fields ignored)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.documents import QA, Passage


class QAIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=2000)
    answer: str = Field(min_length=1, max_length=2000)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("Untitled", min_length=1, max_length=500)
    context: str = Field(min_length=1, max_length=100_000)
    questions: list[QAIn] = Field(default_factory=list, max_length=200)

    @field_validator("context", "title")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    def passage(self) -> Passage:
        return Passage(self.title, self.context, tuple(QA(q.question.strip(), q.answer.strip())
                                                       for q in self.questions))


class DocumentsIn(BaseModel):
    """Either one document (`title`, `context`, `questions`) or a batch under `documents`."""

    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn] = Field(min_length=1)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def one_form(cls, data):
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        single = {k: data[k] for k in ("title", "context", "questions") if k in data}
        if "documents" in data and single:
            raise ValueError("send either one document or 'documents', not both")
        if "documents" not in data:
            if "context" not in single:
                raise ValueError("send a document (title, context, questions) or a batch under 'documents'")
            rest = {k: v for k, v in data.items() if k not in single}
            return rest | {"documents": [single]}
        return data

    def items(self) -> list[DocumentIn]:
        return self.documents


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field("prod", pattern=r"^[a-z][a-z0-9_-]{0,31}$")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(None, description="version to roll prod back to; default: the previous prod")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, logprobs, ...)
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0 = greedy (the default here, unlike OpenAI's 1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None

    def stops(self) -> list[str] | None:
        if self.stop is None:
            return None
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops


class ChatCompletionIn(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionIn(_Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)

    @field_validator("prompt")
    @classmethod
    def one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("exactly one prompt per request is supported")
            v = v[0]
        if not v:
            raise ValueError("prompt is empty")
        return v


def json_safe(x):
    """JSON has no NaN: unmeasured figures become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
