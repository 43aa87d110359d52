"""The one validated configuration object every command receives; built from YAML under configs/."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.settings.arc import ArcSettings
from core.settings.student import ModelSettings, TrainSettings
from core.settings.teacher import RLSettings, TeacherSettings


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


class ReplaySettings(BaseModel):
    """Mix earlier documents' training sequences into the new adapter's training (counters interference)."""

    model_config = ConfigDict(extra="forbid")
    docs: int = Field(4, ge=0)  # 0 disables replay
    sequences_per_doc: int = Field(2, ge=1)


class MonitorSettings(BaseModel):
    """Which past documents' probes are replayed after each update: all, or the most similar + a random few."""

    model_config = ConfigDict(extra="forbid")
    budget: int | None = Field(None, ge=1)  # None = every past document
    similar: int = Field(4, ge=0)


class GateSettings(BaseModel):
    """Promotion gate: an update is kept only if it learned and did not cost what the model knew."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # The document's probe accuracy gain must be >= this. Above 0 by default: the canary budget is cumulative,
    # so an update that learned nothing measurable must not spend it (the demo promoted such an update).
    min_gain: float = 0.01
    max_forgetting: float = Field(0.05, ge=0)  # mean drop on replayed past probes must be <= this
    # General ability, cumulative against the untouched model (not per step): canary accuracy may fall by at
    # most this much (a fraction: 0.02 = 2 points), and drift (KL from the base on neutral prompts, nats per
    # token) may not exceed max_drift. null turns a budget off.
    max_canary_drop: float | None = Field(0.02, ge=0)
    max_drift: float | None = Field(None, gt=0)
    # An update refused for its canary or drift cost is retried this many times, each gentler; after that the
    # document is reported as not learnable within the budget. `rescale`: the same adapter with its delta
    # multiplied by `rescale` (no retraining: a retry costs one canary measurement); `retrain`: train again with
    # learning rate x gentler_lr and retention weight x gentler_retain.
    retries: int = Field(3, ge=0, le=5)
    retry: Literal["rescale", "retrain"] = "rescale"
    rescale: float = Field(0.5, gt=0, lt=1)
    gentler_lr: float = Field(0.5, gt=0, le=1)
    gentler_retain: float = Field(2.0, ge=1)


class CanarySettings(BaseModel):
    """The general-capability canary and drift prompts (see evaluation/canary.py). Files default to those shipped."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    file: str | None = None  # JSON list of {question, answers, kind}; null = evaluation/data/canary.json
    prompts_file: str | None = None  # {"drift": [...], "retain": [...]}; null = evaluation/data/neutral_prompts.json
    retain_questions_file: str | None = None  # JSON list of questions; null = evaluation/data/retain_questions.json
    max_new_tokens: int = Field(24, ge=1, le=256)
    batch_size: int = Field(64, ge=1, le=512)
    drift_max_new_tokens: int = Field(48, ge=1, le=512)  # length of the base's answers drift is measured over
    topk: int = Field(64, ge=1)


class ConsolidationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(1, ge=0)  # consolidate every N promoted updates (0 = only by depth)
    max_depth: int = Field(8, ge=1)  # ... or when the stack holds more adapters than this
    rank: int | None = Field(None, ge=1)  # None = exact fold (ranks add up); else SVD to this rank
    # adapter: fold into one adapter (one LoRA matmul per module per query).
    # base: merge into the served base weights (a new base snapshot, recorded as merged adapters in the
    #       manifest and applied on load): queries cost what the bare base costs; rollback stays exact.
    into: Literal["adapter", "base"] = "base"


class RoutingSettings(BaseModel):
    """Routed adapters (serving/routing.py): a question meets only the adapter of the learned document it is about."""
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    quantile: float = Field(0.98, gt=0, le=1)  # route at most ~2% of general questions (calibrated per version)
    # bm25 (default: at 1,000 documents it routes 66% of questions to their own document against cosine's 49%,
    # at the same 2% of general questions routed; RESULTS.md "Routing at scale") or cosine (tf-idf)
    scorer: Literal["bm25", "cosine"] = "bm25"
    k1: float = Field(1.2, gt=0)  # BM25 term-frequency saturation
    b: float = Field(0.75, ge=0, le=1)  # BM25 length normalisation
    # never route below this score; None = the scorer's floor (BM25 4.0, about one rare word matched; cosine 0.08)
    min_score: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _floor_fits_the_scorer(self):
        if self.scorer == "cosine" and self.min_score is not None and self.min_score >= 1:
            raise ValueError(f"routing.min_score is a cosine for the cosine scorer: it must be below 1, got "
                             f"{self.min_score}")
        return self

    @property
    def floor(self) -> float:
        return self.min_score if self.min_score is not None else {"bm25": 4.0, "cosine": 0.08}[self.scorer]


class ContinualSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state_dir: str = "state"
    database: str | None = None  # None = SQLite at <state_dir>/memory.sqlite; or postgresql://user@host/db
    # self-edit | passage | qa (chat QA pairs from the passage's own sentences) | qa+passage; see
    # agent/training_data.py
    # the named recipe (`recipes:`) a document is learned with: its overrides apply to the continual learner and
    # to `seal eval`'s learn condition; the plain `train` section stays the paper's raw-text regime (baselines)
    recipe: str | None = "recite-lean"
    train_on: Literal["self-edit", "passage", "qa", "qa+passage", "masked+passage"] = "self-edit"
    qa_pairs: int = Field(24, ge=1, le=256)  # QA pairs built per document for the qa regimes
    # which questions teacher/cloze.py builds from the passage's sentences: cloze (a span asked for), complete
    # (the rest of a sentence), about (what the passage says about a name)
    qa_kinds: list[Literal["cloze", "complete", "about"]] = Field(default_factory=lambda: ["cloze"], min_length=1)
    passage_copies: int = Field(1, ge=1, le=64)  # train_on passage / qa+passage / masked+passage: copies per epoch
    # masked passage reconstruction (arXiv 2510.09885): per epoch, this many copies of the passage with a random
    # mask_min..mask_max share of its words blanked, each trained to restore the whole passage; any regime
    masked_copies: int = Field(0, ge=0, le=64)
    mask_min: float = Field(0.05, ge=0, lt=1)
    mask_max: float = Field(0.95, gt=0, le=1)
    write_probes: bool = True  # teacher writes probes for documents without QA
    # who writes them: the teacher (self-qa samples), the passage's own sentences (cloze spans the reading model
    # answers), or both (the teacher's, topped up from the sentences up to 5)
    probe_writer: Literal["teacher", "sentences", "both"] = "both"
    merge_each_update: bool = False  # the paper's protocol (baseline): merge every adapter into the weights
    replay: ReplaySettings = ReplaySettings()
    monitor: MonitorSettings = MonitorSettings()
    gate: GateSettings = GateSettings()
    canary: CanarySettings = CanarySettings()
    consolidation: ConsolidationSettings = ConsolidationSettings()  # not used with routing (experts stay apart)
    routing: RoutingSettings = RoutingSettings()


class PrepareSettings(BaseModel):
    """`seal prepare`: train the student once on other documents with questions about them (learning to learn)."""
    model_config = ConfigDict(extra="forbid")
    qa_share: float = Field(0.6, ge=0, lt=1)  # share of training units that are question -> answer pairs
    max_passages: int | None = Field(None, ge=1)  # the first N passages of the file (null = all)
    epochs: int = Field(1, ge=1, le=100)
    learning_rate: float = Field(3e-4, gt=0, le=1)
    batch_size: int = Field(8, ge=1, le=512)
    retain: bool = True  # keep the untouched model's answers on general prompts while preparing (train.retain)


class ServiceSettings(BaseModel):
    """The long-running agent: transport, HTTP server, auth and limits."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["embedded", "celery"] = "embedded"  # embedded: in-process worker, no broker to install
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/0"
    queue: str = "seal"
    visibility_timeout_s: int = Field(4 * 3600, ge=1)  # longer than the longest job, or Redis redelivers it
    restore_interval_s: int = Field(10, ge=1)  # how often a worker re-queues tasks of workers that died
    max_attempts: int = Field(3, ge=1)  # deliveries of one job before it is failed (a worker lost each time)
    api_keys: dict[str, Literal["read", "write"]] = {}  # key -> scope; also SEAL_API_KEYS="key:scope,..."
    max_request_bytes: int = Field(2_000_000, ge=1024)
    max_documents_per_request: int = Field(64, ge=1)
    max_document_words: int = Field(20_000, ge=1)  # a longer document is refused (413), never cut
    max_document_parts: int = Field(64, ge=1)  # titled parts of ~300 words it is trained in (422 past this)
    max_new_tokens: int = Field(512, ge=1)  # the most a completion request may ask for
    serve_model: Literal["separate", "shared"] = "separate"  # embedded: own model copy for queries (no waiting
    #                                                          behind training) or share the worker's


class ServingSettings(BaseModel):
    """In-process query serving (serving/batching.py): concurrent requests are decoded in batches."""

    model_config = ConfigDict(extra="forbid")
    max_batch: int = Field(32, ge=1, le=256)  # sequences decoded together (1 = one request at a time)
    max_wait_ms: float = Field(10.0, ge=0, le=10_000)  # how long the first request waits for the batch to fill
    max_queue: int = Field(256, ge=1)  # requests waiting beyond this get 503 with Retry-After
    max_loaded_versions: int = Field(8, ge=1)  # unrouted: versions whose adapters stay in memory (LRU out)
    adapter_cache_mib: int = Field(2048, ge=1)  # routed: only the adapters queries route to are loaded, LRU out
    #                                              past this many MiB (a rank-32 SmolLM2 adapter is ~39 MiB)
    # routed: at most this many adapters live at once; an evicted adapter's LoRA modules stay as a slot that the
    # next load fills by copying weights (~0.1 s) instead of building peft modules again (~1-3 s)
    adapter_slots: int = Field(32, ge=1)
    request_timeout_s: float | None = Field(300.0, gt=0)  # a query not answered by then gets 504 and leaves its batch
    # direct: the routed adapter answers the question; recite: it first writes out its document from the title
    # alone, and the untouched model answers from that recitation (in-process serving; RESULTS.md, issue 26)
    answer: Literal["direct", "recite"] = "recite"
    # recite: how many parts of a long document are recited and read per question (its nearest by BM25); the
    # reader's window holds a few parts, and reciting one part costs what decoding it costs
    recite_parts: int = Field(2, ge=1, le=16)


class VLLMSettings(BaseModel):
    """A vLLM server (its own process and environment) that answers what the student and teacher generate."""

    model_config = ConfigDict(extra="forbid")
    url: str = "http://127.0.0.1:8001"
    api_key_env: str | None = None  # the name of an env var holding the server's key (never the key itself)
    served_model: str | None = None  # the base model's name on the server (default: the first /v1/models id)
    max_model_len: int | None = Field(None, ge=16)  # None: the model's own context length
    memory_utilization: float | None = Field(None, gt=0, le=1)  # --gpu-memory-utilization (on the CPU build:
    #                                                               the share of RAM it reserves); None: vLLM's
    cpu_kvcache_gib: int | None = Field(None, ge=1)  # VLLM_CPU_KVCACHE_SPACE for the CPU build
    max_lora_rank: int = Field(64, ge=1)  # the server's --max-lora-rank; a version is folded to at most this
    keep_loaded: int = Field(4, ge=1)  # versions kept loaded besides those an alias points at
    export_dir: str = "vllm-adapters"  # where one-adapter exports of versions are written (inside state_dir
    #                                    when relative); the server must be able to read this path
    timeout_s: float = Field(600.0, gt=0)
    command: list[str] = []  # `seal vllm-server` runs this (e.g. a separate venv's vllm serve ...)
    startup_timeout_s: float = Field(600.0, gt=0)


class BackendSettings(BaseModel):
    """Which engine generates: in-process transformers (default) or a vLLM server. Training always stays
    in-process (transformers + peft); only inference moves."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["transformers", "vllm"] = "transformers"
    vllm: VLLMSettings = VLLMSettings()


# the learning recipes measured for issue 26 (RESULTS.md); configs/default.yaml lists the same
DEFAULT_RECIPES: dict[str, list[str]] = {
    "study-distill": [
        "continual.train_on=qa+passage",
        "continual.qa_pairs=48",
        "continual.qa_kinds=[cloze, complete, about]",
        "continual.passage_copies=2",
        "train.loss=both",
        "train.distill_temperature=2.0",
        "train.batch_size=8",
        "train.epochs=5",
    ],
    "study-kl": [
        "continual.train_on=qa+passage",
        "continual.qa_pairs=48",
        "continual.qa_kinds=[cloze, complete, about]",
        "continual.passage_copies=2",
        "train.loss=distill",
        "train.distill_temperature=2.0",
        "train.batch_size=8",
        "train.epochs=5",
    ],
    "study-nll": [
        "continual.train_on=qa+passage",
        "continual.qa_pairs=48",
        "continual.qa_kinds=[cloze, complete, about]",
        "continual.passage_copies=2",
        "train.loss=nll",
        "train.batch_size=8",
        "train.epochs=5",
    ],
    "teacher-edit": [
        "continual.train_on=self-edit",
    ],
    "recite": [
        "continual.train_on=passage",
        "train.epochs=30",
    ],
    "recite-lean": [
        "continual.train_on=passage",
        "train.epochs=30",
        "train.retain.weight=0.0",
    ],
    "masked": [
        "continual.train_on=masked+passage",
        "continual.passage_copies=1",
        "continual.masked_copies=3",
        "train.epochs=6",
    ],
}


class SealConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    runs_dir: str = "runs"
    runtime: RuntimeSettings = RuntimeSettings()
    model: ModelSettings = ModelSettings()
    teacher: TeacherSettings = TeacherSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    continual: ContinualSettings = ContinualSettings()
    service: ServiceSettings = ServiceSettings()
    serving: ServingSettings = ServingSettings()
    rl: RLSettings = RLSettings()
    backend: BackendSettings = BackendSettings()
    arc: ArcSettings = ArcSettings()
    prepare: PrepareSettings = PrepareSettings()
    # named learning recipes: each is a list of `section.key=value` overrides of this config (what `--set`
    # takes); `seal eval --conditions recipe:NAME` trains a document with one, paired against the others
    recipes: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_RECIPES.items()})

    @model_validator(mode="after")
    def _servable(self) -> "SealConfig":
        if self.backend.kind == "vllm" and self.continual.merge_each_update:
            raise ValueError("backend.kind=vllm cannot serve continual.merge_each_update (untracked merges change "
                             "the base weights the server holds); use the adapter stack")
        if self.continual.routing.enabled and self.continual.merge_each_update:
            raise ValueError("continual.routing needs the adapter stack; it cannot route merge_each_update")
        if self.continual.recipe is not None and self.continual.recipe not in self.recipes:
            raise ValueError(f"continual.recipe {self.continual.recipe!r} is not among recipes "
                             f"({', '.join(sorted(self.recipes)) or 'none defined'})")
        for name, sets in self.recipes.items():
            if any(x.split("=", 1)[0].strip() == "continual.recipe" for x in sets):
                raise ValueError(f"recipe {name!r} may not set continual.recipe")
        return self

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


def apply_sets(cfg: SealConfig, sets: list[str]) -> SealConfig:
    """`--set section.key=value` overrides (value parsed as YAML), validated like the file itself."""
    data = cfg.model_dump()
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: no config section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown key {parts[-1]!r}")
        node[parts[-1]] = yaml.safe_load(value)
    try:
        return SealConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError("invalid --set override: " + "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors(include_url=False))) from None


def learning_config(cfg: SealConfig) -> SealConfig:
    """The config a document is learned with: continual.recipe's overrides applied (itself when none)."""
    return recipe_config(cfg, cfg.continual.recipe) if cfg.continual.recipe else cfg


def recipe_config(cfg: SealConfig, name: str) -> SealConfig:
    """The config a named recipe trains with (its overrides applied, validated like `--set`)."""
    if name not in cfg.recipes:
        known = ", ".join(sorted(cfg.recipes)) or "none"
        raise ConfigError(f"unknown recipe {name!r} (the config defines: {known})")
    try:
        return apply_sets(cfg, cfg.recipes[name])
    except ConfigError as e:
        raise ConfigError(f"recipe {name!r}: {e}") from e
