"""The student: one base model per process, LoRA adapters added, trained, saved and removed on it."""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm.auto import tqdm

from core.io import atomic_dir
from core.settings.student import TrainSettings
from student.sequences import collate, epoch_batches, tokenize_pairs, tokenize_sequences
from student.soft_targets import SoftTarget, soft_loss


@dataclass
class TrainStats:
    adapter: str
    sequences: int
    steps: int
    real_tokens: int
    pad_tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return (self.real_tokens + self.pad_tokens) / self.seconds if self.seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        total = self.real_tokens + self.pad_tokens
        return self.pad_tokens / total if total else 0.0

    def summary(self) -> dict:
        first = sum(self.losses[:5]) / max(1, len(self.losses[:5]))
        last = sum(self.losses[-5:]) / max(1, len(self.losses[-5:]))
        return dict(
            adapter=self.adapter, sequences=self.sequences, steps=self.steps, real_tokens=self.real_tokens,
            pad_tokens=self.pad_tokens, seconds=round(self.seconds, 3), tokens_per_s=round(self.tokens_per_s, 1),
            padding_fraction=round(self.padding_fraction, 4), loss_first=round(first, 4), loss_last=round(last, 4),
        )


def lora_config(s: TrainSettings) -> LoraConfig:
    return LoraConfig(
        r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )


class Student:
    """Owns the base model for the life of the process; never reloads it per adaptation."""

    def __init__(self, model, tokenizer, settings: TrainSettings):
        self.base = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.peft: PeftModel | None = None
        self.merged: tuple[str, ...] = ()  # adapters whose deltas live in the base weights (in this order)
        self._originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(weight) -> (weight, original)
        self._revision = self._serial = 0  # see base_key
        for p in self.base.parameters():
            p.requires_grad_(False)

    # -- adapter bookkeeping -------------------------------------------------------------------------
    @property
    def base_key(self) -> tuple:
        """Names the current base weights: equal keys mean equal weights, so callers may reuse what they computed
        on the base (untracked merges get a fresh serial; tracked ones are named; restore_base goes back to 0)."""
        return (self._revision, self.merged)

    @property
    def model(self):
        """The model to generate with: the PEFT wrapper while adapters exist, else the bare base (LoRA layers
        without adapters are pass-throughs). To be explicit about which adapters are active, use `use()`."""
        return self.peft if self.adapters() else self.base

    def adapters(self) -> list[str]:
        return [] if self.peft is None else [a for a in self.peft.peft_config]

    def _add(self, name: str, seed: int, settings: TrainSettings | None = None) -> None:
        torch.manual_seed(seed)  # LoRA A matrices are drawn from the global RNG
        cfg = lora_config(settings or self.settings)
        if self.peft is None:
            self.peft = get_peft_model(self.base, cfg, adapter_name=name)
        else:
            if name in self.peft.peft_config:
                raise ValueError(f"adapter {name!r} already exists")
            self.peft.add_adapter(name, cfg)
        self._set_active([name])

    def _set_active(self, names: list[str]) -> None:
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
        self._set_active(names)
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
                    self._set_active([self.adapters()[0]])
                try:
                    with self.peft.disable_adapter():
                        yield self.peft
                finally:  # leaving disable_adapter() marks the active adapter trainable again
                    for p in self.peft.parameters():
                        p.requires_grad_(False)
            return
        self._activate(name)
        yield self.peft

    # -- training ------------------------------------------------------------------------------------
    def train_adapter(
        self, texts: list[str], name: str, seed: int, *, settings: TrainSettings | None = None,
        progress: bool = False, desc: str | None = None, stack: list[str] | tuple[str, ...] = (),
        pairs: list[tuple[str, str]] | None = None, soft: list[SoftTarget] | None = None,
        retain: list[SoftTarget] | None = None,
    ) -> TrainStats:
        """LoRA SFT of a fresh adapter: next-token loss on real tokens only (padding is masked out).

        With `stack`, those adapters stay active (the new one learns on top of them) but frozen. With `pairs`
        (prompt, completion), only completion tokens carry loss (chat QA, teacher training). `soft` examples are
        matched to a reference distribution (context distillation; with `settings.loss == "both"` their
        completion tokens also carry next-token loss). With `retain` and `settings.retain.weight > 0`, every
        step adds that weight x the KL to the untouched model on `retain.per_step` neutral prompts.
        """
        s = settings or self.settings
        seqs: list[list[int]] = []
        prompt_lens: list[int] = []
        if pairs:
            seqs, prompt_lens = tokenize_pairs(self.tokenizer, pairs, s.max_seq_len)
        if texts:
            extra = tokenize_sequences(self.tokenizer, texts, s.max_seq_len)
            seqs, prompt_lens = seqs + extra, prompt_lens + [0] * len(extra)
        soft = list(soft or [])
        if not seqs and not soft:
            raise ValueError("no training sequences")
        use_retain = bool(retain) and s.retain.weight > 0
        self._add(name, seed, s)
        peft = self.peft
        if stack:
            self._set_active([*stack, name])
        params = []
        for n, p in peft.named_parameters():
            own = "lora_" in n and f".{name}." in n
            p.requires_grad_(own)  # peft leaves other adapters trainable when several exist: freeze explicitly
            if own:
                params.append(p)
        opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
        rng = random.Random(seed)
        # one list of units: hard sequences first, then soft targets; batches may mix both
        lengths = [len(x) for x in seqs] + [len(t.ids) for t in soft]
        n_units = len(lengths)
        per_epoch = math.ceil(n_units / s.batch_size)
        total = per_epoch * s.epochs
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, (lambda step: 1.0 - step / total) if s.schedule == "linear" else (lambda step: 1.0)
        )
        stats = TrainStats(name, n_units, 0, 0, 0, 0.0)
        pad_id = self.tokenizer.pad_token_id
        peft.train()
        t0 = time.perf_counter()
        bar = tqdm(total=total, desc=desc or f"train {name}", disable=not progress, unit="step", leave=False)
        try:
            for _ in range(s.epochs):
                for idx in epoch_batches(n_units, lengths, s.batch_size, rng):
                    hard = [i for i in idx if i < len(seqs)]
                    parts, main = [], 0.0
                    if hard:
                        b = collate([seqs[i] for i in hard], pad_id, [prompt_lens[i] for i in hard])
                        out = peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels)
                        parts.append((out.loss, len(hard)))
                        stats.real_tokens += b.real_tokens
                        stats.pad_tokens += b.pad_tokens
                    chosen = [soft[i - len(seqs)] for i in idx if i >= len(seqs)]
                    if chosen:
                        parts.append((self._soft_part(peft, chosen, s, pad_id, stats), len(chosen)))
                    loss = sum(l * w for l, w in parts) / sum(w for _, w in parts)
                    main = float(loss.detach())
                    if use_retain:
                        pick = rng.sample(range(len(retain)), min(s.retain.per_step, len(retain)))
                        loss = loss + s.retain.weight * self._retain_part(peft, [retain[i] for i in pick], s, pad_id,
                                                                          stats)
                    loss.backward()
                    if s.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    stats.steps += 1
                    stats.losses.append(main)
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats.losses[-1]:.3f}")
        finally:
            bar.close()
            peft.eval()
            for p in params:
                p.requires_grad_(False)
        stats.seconds = time.perf_counter() - t0
        return stats

    @staticmethod
    def _soft_part(peft, chosen: list[SoftTarget], s: TrainSettings, pad_id: int, stats: TrainStats):
        """Context distillation on QA targets; with loss 'both', plus next-token loss on the same answers."""
        kl, real = soft_loss(peft, chosen, pad_id) if s.loss != "nll" else (None, 0)
        if s.loss == "distill":
            stats.real_tokens += real
            return kl
        b = collate([list(t.ids) for t in chosen], pad_id, [t.start for t in chosen])
        nll = peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
        stats.real_tokens += b.real_tokens
        return nll if kl is None else kl + nll

    @staticmethod
    def _retain_part(peft, chosen: list[SoftTarget], s: TrainSettings, pad_id: int, stats: TrainStats):
        if s.retain.mode == "kl":
            kl, real = soft_loss(peft, chosen, pad_id)
            stats.real_tokens += real
            return kl
        b = collate([list(t.ids) for t in chosen], pad_id, [t.start for t in chosen])
        stats.real_tokens += b.real_tokens
        return peft(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss

    @torch.no_grad()
    def merge_into_base(self, name: str, track: bool = False) -> None:
        """Add an adapter's delta into the base weights and delete the adapter.

        Untracked, this is the paper's continual protocol (irreversible). Tracked, the adapter is recorded in
        `merged` and `restore_base()` can undo it exactly: the first time a weight is changed its original is
        kept, so going back never accumulates float error from subtracting deltas."""
        for mod in self.peft.modules():
            if hasattr(mod, "lora_A") and name in getattr(mod, "lora_A", {}):
                w = mod.get_base_layer().weight
                if id(w) not in self._originals:
                    self._originals[id(w)] = (w, w.detach().clone())
                delta = mod.lora_B[name].weight @ mod.lora_A[name].weight * mod.scaling[name]
                w.add_(delta.to(w.dtype))
        self.drop(name)
        if track:
            self.merged = (*self.merged, name)
        else:
            self._serial += 1
            self._revision = self._serial

    @torch.no_grad()
    def scale_adapter(self, name: str, factor: float) -> None:
        """Multiply an adapter's delta by `factor` (its B matrices), so a saved copy carries the scale."""
        if self.peft is None or name not in self.peft.peft_config:
            raise KeyError(f"no adapter named {name!r}")
        for mod in self.peft.modules():
            if hasattr(mod, "lora_B") and name in getattr(mod, "lora_B", {}):
                mod.lora_B[name].weight.mul_(factor)

    @torch.no_grad()
    def restore_base(self) -> None:
        """Put back the weights as loaded (undo every merge)."""
        for w, orig in self._originals.values():
            w.copy_(orig)
        self._originals.clear()
        self.merged = ()
        self._revision = 0

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, name: str, path: str | Path) -> Path:
        """Write to a temp folder beside the target, then rename: a crash never leaves half an adapter."""
        if self.peft is None or name not in self.peft.peft_config:
            raise KeyError(f"no adapter named {name!r}")
        dest = Path(path)
        with atomic_dir(dest, root=lambda tmp: tmp / name if (tmp / name).is_dir() else tmp) as tmp:
            self.peft.save_pretrained(tmp, selected_adapters=[name])
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
