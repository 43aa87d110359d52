"""Request bodies, validated at the boundary (every field bounded; OpenAI fields that would change the answer and
are not implemented are refused by name)."""
from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

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


class ContentPart(BaseModel):
    """One part of a message's content as OpenAI clients send it (`[{"type": "text", "text": "..."}]`)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1, max_length=40)
    text: str | None = Field(None, max_length=100_000)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]  # developer: newer clients' name for system
    content: Annotated[str, Field(max_length=100_000)] | Annotated[list[ContentPart], Field(min_length=1, max_length=100)]

    def text(self, index: int) -> str:
        """The message as plain text (text parts joined); a part this text model cannot read is refused with the
        parameter that holds it."""
        if isinstance(self.content, str):
            return self.content
        out = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise Unsupported(f"messages[{index}].content[{j}].type",
                                  f"content part type {part.type!r} is not supported: this model reads text parts only")
            out.append(part.text)
        text = "\n".join(out)
        if len(text) > 100_000:
            raise Unsupported(f"messages[{index}].content", "a message's text is over 100000 characters",
                              code="invalid_value")
        return text

    def rendered(self, index: int) -> dict:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text(index)}


class Unsupported(ValueError):
    """A request parameter this server does not implement: answered 400 with the parameter's name, never ignored."""

    def __init__(self, param: str, message: str, code: str = "unsupported_parameter"):
        super().__init__(message)
        self.param, self.code = param, code


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


def _off(v) -> bool:
    """A parameter left at its neutral value (absent, null, false, 0, empty) changes nothing, so it is accepted."""
    return v is None or v is False or v == 0 or v == {} or v == [] or v == "none"


class _Sampling(BaseModel):
    # OpenAI clients send fields this server does not use: harmless ones (user, metadata, store, ...) are
    # accepted; the ones that would change the answer are refused by name (`unsupported`), never ignored
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0 = greedy (the default here, unlike OpenAI's 1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None

    # parameters that would change the answer and are not implemented here
    REFUSED: ClassVar[tuple[str, ...]] = ("logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "frequency_penalty",
               "presence_penalty", "logit_bias", "best_of", "echo", "suffix", "audio", "modalities", "prediction",
               "reasoning_effort", "web_search_options")

    def unsupported(self) -> None:
        extra = self.model_extra or {}
        for name in self.REFUSED:
            v = extra.get(name)
            if name == "best_of" and v == 1:
                continue
            if not _off(v):
                raise Unsupported(name, f"{name} is not supported by this server (sent: {v!r}); leave it out")
        fmt = extra.get("response_format")
        if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            raise Unsupported("response_format", "response_format other than {\"type\": \"text\"} is not supported")

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
