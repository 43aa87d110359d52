"""The student: one base model per process, LoRA adapters added, trained, saved and removed on it. This module
is the adapter registry and persistence; the training loop is student/train.py, weight surgery student/weights.py."""
from __future__ import annotations

import contextlib
import math
import re
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
        # Serving swaps adapters in and out; building peft's LoRA modules costs ~1-1.5 s per load on SmolLM2, copying
        # weights into modules already built costs milliseconds. A released adapter's modules stay as a free slot
        # (B zeroed: an exact pass-through) that the next load of the same shape fills; an adapter held by a slot
        # keeps its own name here and lives under the slot's name in peft.
        self._slot_of: dict[str, str] = {}  # adapter name -> peft adapter holding it (only where they differ)
        self._free: list[str] = []  # peft adapters kept as empty slots, oldest first
        self.max_free_slots = 4
        self.load_counts = {"built": 0, "filled": 0}  # adapter loads: new peft modules vs a free slot refilled
        self._thawed = True  # some adapter parameter may require grad (peft's set_adapter, training)
        self._layers_key: tuple | None = None
        self._layers: list | None = None
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
        if self.peft is None:
            return []
        held = {slot: name for name, slot in self._slot_of.items()}
        return [held.get(a, a) for a in self.peft.peft_config if a not in self._free]

    def peft_name(self, name: str) -> str:
        """The name peft knows an adapter by (differs when serving loaded it into a reused slot)."""
        return self._slot_of.get(name, name)

    def free_slots(self) -> int:
        return len(self._free)

    def drop_free_slots(self) -> None:
        while self._free:
            self._delete(self._free.pop())

    def add_adapter(self, name: str, seed: int, settings: TrainSettings | None = None) -> None:
        torch.manual_seed(seed)  # LoRA A matrices are drawn from the global RNG
        cfg = lora_config(settings or self.settings)
        if self.peft is None:
            self.peft = get_peft_model(self.base, cfg, adapter_name=name)
        else:
            if name in self.adapters():
                raise ValueError(f"adapter {name!r} already exists")
            self.peft.add_adapter(self.reserve_name(name), cfg)
        self.set_active([name])

    def set_active(self, names: list[str]) -> None:
        """PeftModel tracks one 'active adapter' of its own (used in forward) besides the tuner's list; keep
        both pointing at live adapters, or a deleted name breaks the next forward. peft marks the active adapters
        trainable (training relies on it); `_activate` freezes them again for serving."""
        names = [self.peft_name(n) for n in names]
        self.peft.active_adapter = names[-1]
        self.peft.base_model.set_adapter(names)
        self._thawed = True

    def _activate(self, names: str | list[str]) -> None:
        """Activate one adapter or a stack (their deltas add up) for inference. Every served batch comes
        through here, so it only points the LoRA layers at the names: peft's set_adapter walks every module and
        parameter (~0.3-0.5 s on SmolLM2 with a few adapters loaded), this costs about a millisecond."""
        names = [names] if isinstance(names, str) else list(names)
        live = set(self.adapters())
        missing = [n for n in names if n not in live]
        if missing:
            raise KeyError(f"no adapter named {missing[0]!r}")
        layers = self._tuner_layers()
        if layers is None:  # modules peft sets up its own way (modules_to_save, merged layers): its own path
            self.set_active(names)
        else:
            pn = [self.peft_name(n) for n in names]
            self.peft.active_adapter = pn[-1]
            self.peft.base_model.active_adapter = pn
            for _, layer in layers:
                layer._active_adapter = pn
        if self._thawed:  # something may require grad since the last freeze: freeze everything once
            for p in self.peft.parameters():
                p.requires_grad_(False)
            self._thawed = False

    def _tuner_layers(self) -> list | None:
        """peft's LoRA layers with their module names, found once per set of adapters (a new adapter may add
        layers); None when the model has modules the fast paths do not handle."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        key = (id(self.peft), tuple(self.peft.peft_config))
        if self._layers_key != key:
            mods = list(self.peft.named_modules())
            if any(isinstance(m, AuxiliaryTrainingWrapper) for _, m in mods):
                self._layers = None
            else:
                self._layers = [(n, m) for n, m in mods if isinstance(m, BaseTunerLayer)]
            self._layers_key = key
        if self._layers is not None and any(layer.merged for _, layer in self._layers):
            return None
        return self._layers

    def drop(self, name: str) -> None:
        if self.peft is not None and name in self.adapters():
            self._delete(self._slot_of.pop(name, name))

    def _delete(self, peft_name: str) -> None:
        self.peft.delete_adapter(peft_name)
        self._thawed = True  # peft re-activates a remaining adapter its own way
        left = list(self.peft.peft_config)
        if left and self.peft.active_adapter not in self.peft.peft_config:
            self.peft.active_adapter = left[-1]
            self.peft.base_model.set_adapter([left[-1]])
            for p in self.peft.parameters():
                p.requires_grad_(False)

    def reserve_name(self, name: str) -> str:
        """The peft name to create adapter `name` under: `name` itself, after deleting a free slot of that name;
        a fresh alias when a slot of that name holds another adapter (recorded, so `peft_name` finds it)."""
        if self.peft is None:
            return name
        if name in self._free:
            self._free.remove(name)
            self._delete(name)
        if name not in self.peft.peft_config:
            return name
        n = 1
        while f"{name}~{n}" in self.peft.peft_config:
            n += 1
        self._slot_of[name] = f"{name}~{n}"
        return self._slot_of[name]

    @torch.no_grad()
    def release(self, name: str) -> None:
        """Stop serving an adapter but keep its modules as a free slot for the next load of the same shape (its
        B matrices zeroed, so an active free slot adds exactly nothing); past `max_free_slots` the oldest free
        slot is deleted. An unknown name is ignored, like `drop`."""
        if self.peft is None or name not in self.adapters():
            return
        slot = self._slot_of.pop(name, name)
        for key, prm in self._slot_params(slot).items():
            if ".lora_B." in key:
                prm.zero_()
        self._free.append(slot)
        while len(self._free) > self.max_free_slots:
            self._delete(self._free.pop(0))

    @contextlib.contextmanager
    def use(self, name: str | list[str] | None):
        """Generate with one adapter or a stack of adapters active, or with none (the base model)."""
        if name is None:
            if not self.adapters():  # LoRA layers with no adapters (or only zeroed free slots) are pass-throughs
                yield self.base
            elif (layers := self._tuner_layers()) is not None:
                # peft's disable_adapter() walks every module on entry and exit (2.4 s per batch on SmolLM2 with
                # 32 adapters live): switch the LoRA layers off directly, and back as they were
                was = [layer._disable_adapters for _, layer in layers]
                for _, layer in layers:
                    layer._disable_adapters = True
                try:
                    yield self.peft
                finally:
                    for (_, layer), w in zip(layers, was):
                        layer._disable_adapters = w
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
        self.weights.merge(self.peft, self.peft_name(name), track)
        self.drop(name)

    def scale_adapter(self, name: str, factor: float) -> None:
        """Multiply an adapter's delta by `factor` (its B matrices), so a saved copy carries the scale."""
        if self.peft is None or name not in self.adapters():
            raise KeyError(f"no adapter named {name!r}")
        scale_delta(self.peft, self.peft_name(name), factor)

    def restore_base(self) -> None:
        """Put back the weights as loaded (undo every merge)."""
        self.weights.restore()

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, name: str, path: str | Path) -> Path:
        """Write to a temp folder beside the target, then rename: a crash never leaves half an adapter."""
        if self.peft is None or name not in self.adapters():
            raise KeyError(f"no adapter named {name!r}")
        dest = Path(path)
        name = self.peft_name(name)
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
        """Load a saved adapter under `name` (replacing a live one of that name): into a free slot of the same
        shape when there is one (weights copied), else as new peft modules."""
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path} is not an adapter folder (no adapter_config.json)")
        self.release(name)
        if self.peft is not None and self._fill_slot(path, name):  # the slot's modules are in eval mode already
            self.load_counts["filled"] += 1
            self._activate(name)
            return
        self.load_counts["built"] += 1
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=False)
        else:
            self.peft.load_adapter(str(path), adapter_name=self.reserve_name(name), is_trainable=False)
        self._activate(name)
        self.peft.eval()

    @torch.no_grad()
    def _fill_slot(self, path: Path, name: str) -> bool:
        """Copy a saved adapter into a free slot whose LoRA config matches and whose parameters are exactly the
        file's tensors; False (nothing changed) when no slot fits."""
        weights = path / "adapter_model.safetensors"
        if not self._free or not weights.is_file():
            return False
        want = _shape_of(LoraConfig.from_pretrained(str(path)))
        slot = next((s for s in reversed(self._free) if _shape_of(self.peft.peft_config[s]) == want), None)
        if slot is None:
            return False
        from safetensors.torch import load_file

        state = load_file(str(weights))
        params = self._slot_params(slot)
        if set(params) != set(state) or any(params[k].shape != v.shape for k, v in state.items()):
            return False
        for k, v in state.items():
            params[k].copy_(v.to(params[k].dtype))
        self._free.remove(slot)
        if slot != name:
            self._slot_of[name] = slot
        return True

    def _slot_params(self, peft_name: str) -> dict:
        """An adapter's parameters keyed as peft saves them (module path, lora_A/lora_B, no adapter name)."""
        layers = self._tuner_layers()
        if layers is None:
            own = re.compile(rf"\.(lora_\w+?)\.{re.escape(peft_name)}\.")
            return {own.sub(r".\1.", n, count=1): p for n, p in self.peft.named_parameters() if own.search(n)}
        out = {}
        for mname, layer in layers:
            for attr in layer.adapter_layer_names:
                d = getattr(layer, attr)
                if peft_name in d:
                    m = d[peft_name]
                    if isinstance(m, torch.nn.Parameter):
                        out[f"{mname}.{attr}"] = m
                    else:
                        for pname, prm in m.named_parameters():
                            out[f"{mname}.{attr}.{pname}"] = prm
        return out


def _shape_of(cfg: LoraConfig) -> tuple:
    """What two LoRA adapters must share for one's weights to be copied into the other's modules."""
    targets = cfg.target_modules
    targets = tuple(sorted(targets)) if isinstance(targets, (set, list, tuple)) else targets
    return (cfg.r, cfg.lora_alpha, targets, cfg.use_rslora, getattr(cfg, "use_dora", False), cfg.bias,
            cfg.fan_in_fan_out, tuple(sorted((cfg.rank_pattern or {}).items())),
            tuple(sorted((cfg.alpha_pattern or {}).items())), tuple(cfg.modules_to_save or ()),
            cfg.layers_to_transform if not isinstance(cfg.layers_to_transform, list) else tuple(cfg.layers_to_transform))
