"""Weight surgery on the base model: adding an adapter's delta into the weights (the paper's merge, or a
tracked fold that can be undone exactly), scaling an adapter's delta, and restoring the weights as loaded."""
from __future__ import annotations

import torch


class BaseWeights:
    """The base weights' state: which adapters were merged into them, and the originals of changed weights."""

    def __init__(self):
        self.merged: tuple[str, ...] = ()  # adapters whose deltas live in the base weights (in this order)
        self.originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(weight) -> (weight, original)
        self.revision = self.serial = 0  # untracked merges get a fresh serial; restore goes back to 0

    @property
    def key(self) -> tuple:
        return (self.revision, self.merged)

    @torch.no_grad()
    def merge(self, peft, name: str, track: bool) -> None:
        """Add adapter `name`'s delta into the base weights (the caller deletes the adapter). Tracked, it is
        recorded in `merged` and `restore()` undoes it exactly: the first time a weight is changed its original
        is kept, so going back never accumulates float error from subtracting deltas."""
        for mod in peft.modules():
            if hasattr(mod, "lora_A") and name in getattr(mod, "lora_A", {}):
                w = mod.get_base_layer().weight
                if id(w) not in self.originals:
                    self.originals[id(w)] = (w, w.detach().clone())
                delta = mod.lora_B[name].weight @ mod.lora_A[name].weight * mod.scaling[name]
                w.add_(delta.to(w.dtype))
        if track:
            self.merged = (*self.merged, name)
        else:
            self.serial += 1
            self.revision = self.serial

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights as loaded (undo every merge)."""
        for w, orig in self.originals.values():
            w.copy_(orig)
        self.originals.clear()
        self.merged = ()
        self.revision = 0


@torch.no_grad()
def scale_delta(peft, name: str, factor: float) -> None:
    """Multiply an adapter's delta by `factor` (its B matrices), so a saved copy carries the scale."""
    for mod in peft.modules():
        if hasattr(mod, "lora_B") and name in getattr(mod, "lora_B", {}):
            mod.lora_B[name].weight.mul_(factor)
