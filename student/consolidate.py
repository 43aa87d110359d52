"""Fold a stack of LoRA adapters into one adapter: exactly (ranks concatenated) or compressed by SVD.

For a module, a stack computes  sum_i s_i * B_i A_i  with s_i = alpha_i / r_i. Stacking the factors,
B = [s_1 B_1 | s_2 B_2 | ...] and A = [A_1; A_2; ...], gives the same delta B A with rank sum(r_i) and scale 1:
the same function, one adapter, one LoRA matmul per module instead of one per document. Compression keeps the
top-k singular directions of B A, computed through QR of the thin factors (never forming d_out x d_in SVDs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig


@dataclass
class FoldReport:
    adapters: list[str]
    rank_in: int
    rank_out: int
    rel_error: float  # ||delta - folded||_F / ||delta||_F, over all modules (0 for an exact fold)
    modules: int


def _lora_modules(peft_model):
    for name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "lora_B") and hasattr(mod, "scaling"):
            yield name, mod


def _stacked_factors(mod, names: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    As, Bs = [], []
    for n in names:
        if n in mod.lora_A:
            As.append(mod.lora_A[n].weight.detach().float())
            Bs.append(mod.lora_B[n].weight.detach().float() * mod.scaling[n])
    if not As:
        return None
    return torch.cat(Bs, dim=1), torch.cat(As, dim=0)


def compress(B: torch.Tensor, A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-k factors of B A; returns (B_k, A_k, squared error, squared norm)."""
    qb, rb = torch.linalg.qr(B)  # B = qb rb
    qa, ra = torch.linalg.qr(A.T)  # A = ra^T qa^T
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    k = min(k, s.numel())
    root = s[:k].sqrt()
    Bk = (qb @ u[:, :k]) * root
    Ak = root[:, None] * (vh[:k] @ qa.T)
    return Bk, Ak, float((s[k:] ** 2).sum()), float((s**2).sum())


@torch.no_grad()
def fold(student, names: list[str], new_name: str, rank: int | None = None) -> FoldReport:
    """Create live adapter `new_name` equal to the sum of `names` (exact), or its best rank-`rank` version."""
    peft = student.peft
    if peft is None or not names:
        raise ValueError("nothing to fold")
    live = set(student.adapters())
    missing = [n for n in names if n not in live]
    if missing:
        raise KeyError(f"no adapter named {missing[0]!r}")
    asked, names = list(names), [student.peft_name(n) for n in names]
    factors, targets = {}, set()
    for mname, mod in _lora_modules(peft):
        f = _stacked_factors(mod, names)
        if f is not None:
            factors[mname] = f
            targets.add(mname.rsplit(".", 1)[-1])
    total = max(B.shape[1] for B, _ in factors.values())
    out_rank = total if rank is None or rank >= total else rank
    err2 = norm2 = 0.0
    final = {}
    for mname, (B, A) in factors.items():
        if B.shape[1] < out_rank:  # a module some adapters skip: pad with zero directions
            pad = out_rank - B.shape[1]
            B = torch.cat([B, B.new_zeros(B.shape[0], pad)], 1)
            A = torch.cat([A, A.new_zeros(pad, A.shape[1])], 0)
        if B.shape[1] > out_rank:
            B, A, e, n = compress(B, A, out_rank)
            err2, norm2 = err2 + e, norm2 + n
        else:
            norm2 += float(((B @ A) ** 2).sum()) if rank is not None else 0.0
        final[mname] = (B, A)
    first = peft.peft_config[names[0]]
    cfg = LoraConfig(r=out_rank, lora_alpha=out_rank, lora_dropout=0.0, target_modules=sorted(targets),
                     bias="none", task_type=first.task_type)
    made = student.reserve_name(new_name)
    peft.add_adapter(made, cfg)
    for mname, mod in _lora_modules(peft):
        if mname in final and made in mod.lora_A:
            B, A = final[mname]
            mod.lora_A[made].weight.copy_(A.to(mod.lora_A[made].weight.dtype))
            mod.lora_B[made].weight.copy_(B.to(mod.lora_B[made].weight.dtype))
    for p in peft.parameters():
        p.requires_grad_(False)
    rel = (err2 / norm2) ** 0.5 if norm2 > 0 else 0.0
    return FoldReport(asked, total, out_rank, rel, len(final))
