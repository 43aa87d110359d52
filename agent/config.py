"""The one validated configuration object every command receives; built from YAML under configs/."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from student.settings import ModelSettings, TrainSettings
from teacher.settings import TeacherSettings


class ConfigError(ValueError):
    """Raised for a config that cannot be used; the CLI turns it into exit code 2."""


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: int = Field(2, ge=1, le=256)


class JudgeSettings(BaseModel):
    """LLM judge: `openai` calls any OpenAI-compatible endpoint; `local` asks the loaded base model."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "openai", "local"] = "none"
    url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(32, ge=1, le=1024)
    batch_size: int = Field(8, ge=1, le=256)
    judge: JudgeSettings = JudgeSettings()


class SealConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    runs_dir: str = "runs"
    runtime: RuntimeSettings = RuntimeSettings()
    model: ModelSettings = ModelSettings()
    teacher: TeacherSettings = TeacherSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()

    def with_overrides(self, **sections: dict[str, Any]) -> "SealConfig":
        data = self.model_dump()
        for name, values in sections.items():
            data[name] = {**data[name], **values} if isinstance(data[name], dict) else values
        return SealConfig.model_validate(data)


def load_config(path: str | Path) -> SealConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    try:
        return SealConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: invalid config:\n{e}") from e
