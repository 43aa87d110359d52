"""The student: one base model per process, LoRA adapters added, trained, saved and removed on it. This module
is the adapter registry and persistence; the training loop is student/train.py, weight surgery student/weights.py."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from core.io import atomic_dir
from core.settings.student import TrainSettings
from student.train import TrainStats, train_adapter
from student.weights import BaseWeights, scale_delta


def lora_config(s: TrainSettings) -> LoraConfig:
    return LoraConfig(
        r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )


def store_as(path: Path, dtype: str) -> None:
    """Rewrite a safetensors file with its floating-point tensors in `dtype` (storage only: loading upcasts)."""
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    weights = {k: (v.to(target) if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    save_file(weights, str(path), metadata={"format": "pt"})


def adapter_memory_bytes(folder: Path) -> int:
    """Bytes an adapter folder takes once loaded: peft upcasts half-precision adapters to float32, so a
    bfloat16 file's size is half of what it costs in memory."""
    from safetensors import safe_open

    total = 0
    for f in Path(folder).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                sl = h.get_slice(k)
                total += math.prod(sl.get_shape()) * _LOADED_BYTES.get(sl.get_dtype(), 4)
    return total


_LOADED_BYTES = {"F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}  # floats: 4 (float32)


class Student:
    """Owns the base model for the life of the process; never reloads it per adaptation."""

    def __init__(self, model, tokenizer, settings: TrainSettings):
        self.base = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.peft: PeftModel | None = None
        self.weights = BaseWeights()
        for p in self.base.parameters():
            p.requires_grad_(False)

    # -- adapter bookkeeping -------------------------------------------------------------------------
    @property
    def base_key(self) -> tuple:
        """Names the current base weights: equal keys mean equal weights, so callers may reuse what they computed
        on the base (untracked merges get a fresh serial; tracked ones are named; restore_base goes back to 0)."""
        return self.weights.key

    @property
    def model(self):
        """The model to generate with: the PEFT wrapper while adapters exist, else the bare base (LoRA layers
        without adapters are pass-throughs). To be explicit about which adapters are active, use `use()`."""
        return self.peft if self.adapters() else self.base

    def adapters(self) -> list[str]:
        return [] if self.peft is None else [a for a in self.peft.peft_config]

    def add_adapter(self, name: str, seed: int, settings: TrainSettings | None = None) -> None:
        torch.manual_seed(seed)  # LoRA A matrices are drawn from the global RNG
        cfg = lora_config(settings or self.settings)
        if self.peft is None:
            self.peft = get_peft_model(self.base, cfg, adapter_name=name)
        else:
            if name in self.peft.peft_config:
                raise ValueError(f"adapter {name!r} already exists")
            self.peft.add_adapter(name, cfg)
        self.set_active([name])

    def set_active(self, names: list[str]) -> None:
        """PeftModel tracks one 'active adapter' of its own (used in forward) besides the tuner's list; keep
        both pointing at live adapters, or a deleted name breaks the next forward."""
        self.peft.active_adapter = names[-1]
        self.peft.base_model.set_adapter(names)

    def _activate(self, names: str | list[str]) -> None:
        """Activate one adapter or a stack (their deltas add up). peft's set_adapter marks active adapters
        trainable; serving must not train, so everything is frozen again."""
        names = [names] if isinstance(names, str) else list(names)
        missing = [n for n in names if self.peft is None or n not in self.peft.peft_config]
        if missing:
            raise KeyError(f"no adapter named {missing[0]!r}")
        self.set_active(names)
        for p in self.peft.parameters():
            p.requires_grad_(False)

    def drop(self, name: str) -> None:
        if self.peft is not None and name in self.peft.peft_config:
            self.peft.delete_adapter(name)
            left = self.adapters()
            if left and self.peft.active_adapter not in self.peft.peft_config:
                self._activate([left[-1]])

    @contextlib.contextmanager
    def use(self, name: str | list[str] | None):
        """Generate with one adapter or a stack of adapters active, or with none (the base model)."""
        if name is None:
            if not self.adapters():  # LoRA layers with no adapters left are pass-throughs
                yield self.base
            else:
                if self.peft.active_adapter not in self.peft.peft_config:
                    self.set_active([self.adapters()[0]])
                try:
                    with self.peft.disable_adapter():
                        yield self.peft
                finally:  # leaving disable_adapter() marks the active adapter trainable again
                    for p in self.peft.parameters():
                        p.requires_grad_(False)
            return
        self._activate(name)
        yield self.peft

    # -- training (student/train.py) ----------------------------------------------------------------
    def train_adapter(self, texts: list[str], name: str, seed: int, **kw) -> TrainStats:
        """LoRA SFT of a fresh adapter on top of `stack` (frozen); see student.train.train_adapter."""
        return train_adapter(self, texts, name, seed, **kw)

    # -- weight surgery (student/weights.py) ----------------------------------------------------------
    @property
    def merged(self) -> tuple[str, ...]:
        """Adapters whose deltas live in the base weights (in this order)."""
        return self.weights.merged

    def merge_into_base(self, name: str, track: bool = False) -> None:
        """Add an adapter's delta into the base weights and delete the adapter. Untracked, this is the paper's
        continual protocol (irreversible); tracked, `restore_base()` undoes it exactly."""
        self.weights.merge(self.peft, name, track)
        self.drop(name)

    def scale_adapter(self, name: str, factor: float) -> None:
        """Multiply an adapter's delta by `factor` (its B matrices), so a saved copy carries the scale."""
        if self.peft is None or name not in self.peft.peft_config:
            raise KeyError(f"no adapter named {name!r}")
        scale_delta(self.peft, name, factor)

    def restore_base(self) -> None:
        """Put back the weights as loaded (undo every merge)."""
        self.weights.restore()

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, name: str, path: str | Path) -> Path:
        """Write to a temp folder beside the target, then rename: a crash never leaves half an adapter."""
        if self.peft is None or name not in self.peft.peft_config:
            raise KeyError(f"no adapter named {name!r}")
        dest = Path(path)
        with atomic_dir(dest, root=lambda tmp: tmp / name if (tmp / name).is_dir() else tmp) as tmp:
            self.peft.save_pretrained(tmp, selected_adapters=[name])
            if self.settings.adapter_dtype != "float32":
                for f in tmp.rglob("*.safetensors"):
                    store_as(f, self.settings.adapter_dtype)
        if self.settings.adapter_dtype != "float32":
            # the live copy becomes what was stored, so what the gate measures now is what is served after a reload
            target = getattr(torch, self.settings.adapter_dtype)
            with torch.no_grad():
                for n, prm in self.peft.named_parameters():
                    if f".{name}." in n:
                        prm.copy_(prm.to(target).float())
        return dest

    def load(self, path: str | Path, name: str) -> None:
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path} is not an adapter folder (no adapter_config.json)")
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=False)
        else:
            self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self._activate(name)
        self.peft.eval()
