"""Fold saved LoRA adapter folders into one standard PEFT folder, straight from their files (no model).

A version of the stack is a sum of LoRA deltas over the original base (merged adapters included: merging
only moves a delta into the weights). Servers that apply one LoRA per request (vLLM) need that sum as a
single adapter within their max rank: the factors are concatenated (exact) and, above the limit, compressed
to the best rank-k approximation (the same maths as `student.consolidate`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core.io import atomic_dir
from student.consolidate import compress

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


@dataclass
class ExportReport:
    adapters: int
    rank_in: int
    rank_out: int
    rel_error: float  # ||sum - folded||_F / ||sum||_F over all modules (0 when no compression was needed)
    modules: int
    path: Path


def read_factors(folder: Path) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """An adapter folder as (config, {module: (B x scale, A)}): the factors whose product is its delta."""
    cfg = json.loads((folder / "adapter_config.json").read_text())
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weights")
    tensors = {}
    for f in files:
        tensors |= load_file(str(f))
    r = int(cfg["r"])
    scale = float(cfg.get("lora_alpha", r)) / (math.sqrt(r) if cfg.get("use_rslora") else r)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in tensors.items():
        m = _KEY.match(k)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = t.float()
    return cfg, {mod: (ab["B"] * scale, ab["A"]) for mod, ab in pairs.items() if "A" in ab and "B" in ab}


def fold_folders(folders: list[Path], out: Path, max_rank: int | None = None) -> ExportReport:
    """Write `out` (atomically) as one adapter equal to the sum of `folders`' adapters."""
    if not folders:
        raise ValueError("nothing to fold")
    cfgs, modules = [], {}
    for folder in folders:
        cfg, factors = read_factors(Path(folder))
        cfgs.append(cfg)
        for mod, (B, A) in factors.items():
            modules.setdefault(mod, []).append((B, A))
    rank_in = max(sum(B.shape[1] for B, _ in fs) for fs in modules.values())
    rank_out = rank_in if max_rank is None else min(rank_in, max_rank)
    err2 = norm2 = 0.0
    weights = {}
    for mod, fs in modules.items():
        B = torch.cat([b for b, _ in fs], dim=1)
        A = torch.cat([a for _, a in fs], dim=0)
        if B.shape[1] > rank_out:
            B, A, e, n = compress(B, A, rank_out)
            err2, norm2 = err2 + e, norm2 + n
        else:  # exact here, but its delta still counts in the norm "over all modules"
            norm2 += float(torch.trace((B.T @ B) @ (A @ A.T)))
        if B.shape[1] < rank_out:  # a module fewer adapters touch: zero directions up to the shared rank
            pad = rank_out - B.shape[1]
            B = torch.cat([B, B.new_zeros(B.shape[0], pad)], 1)
            A = torch.cat([A, A.new_zeros(pad, A.shape[1])], 0)
        dtype = torch.float32
        weights[f"{mod}.lora_A.weight"] = A.to(dtype).contiguous()
        weights[f"{mod}.lora_B.weight"] = B.to(dtype).contiguous()
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    cfg = dict(cfgs[0])
    cfg.update(r=rank_out, lora_alpha=rank_out, use_rslora=False, lora_dropout=0.0, target_modules=targets,
               modules_to_save=None, rank_pattern={}, alpha_pattern={})
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file(weights, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    rel = (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0
    return ExportReport(len(folders), rank_in, rank_out, rel, len(modules), out)
