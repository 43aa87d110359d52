"""Forgetting metrics over the ledger R[version][document] (continual-learning conventions):

- average accuracy at version v: mean of R[v][d] over documents learned at or before v;
- backward transfer (BWT): mean over all but the newest document of R[final][d] - R[learned(d)][d]
  (negative = forgetting; the paper's own continual run: about -0.19);
- forgetting of d: max over earlier versions of R[v][d] (from when it was learned) minus R[final][d];
- retention by age: mean R[v][d] grouped by how many updates ago d was learned.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from core.extras import require


@dataclass
class ForgettingReport:
    versions: list[int]
    docs: list[str]  # in learning order
    matrix: list[list[float | None]]  # rows = versions, cols = docs; None = not learned yet / not measured
    avg_accuracy: list[float | None]
    bwt: list[float | None]
    forgetting: dict[str, float] = field(default_factory=dict)
    retention_by_age: dict[int, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)  # the untouched model's accuracy, if measured
    # General ability per version (the canary and drift of evaluation/canary.py), aligned with `versions`;
    # canary_base / drift of version 0 = the untouched model. None where a version was not measured.
    canary: list[float | None] = field(default_factory=list)
    drift: list[float | None] = field(default_factory=list)
    canary_base: float | None = None

    @property
    def canary_retention(self) -> list[float | None]:
        """Canary accuracy relative to the untouched model's (1.0 = nothing lost)."""
        b = self.canary_base
        return [None if c is None or not b else c / b for c in self.canary]

    @property
    def final_avg(self) -> float | None:
        return self.avg_accuracy[-1] if self.avg_accuracy else None

    @property
    def final_bwt(self) -> float | None:
        return self.bwt[-1] if self.bwt else None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("versions", "docs", "matrix", "avg_accuracy", "bwt", "forgetting",
                                              "retention_by_age", "base", "canary", "drift", "canary_base")} | {
            "final_avg": self.final_avg, "final_bwt": self.final_bwt,
            "base_avg": mean(self.base.values()) if self.base else None,
            "canary_retention": self.canary_retention,
            "final_canary": self.canary[-1] if self.canary else None,
            "final_drift": self.drift[-1] if self.drift else None}


def compute(ledger: dict[int, dict[str, float]], learned_at: dict[str, int],
            base: dict[str, float] | None = None, general: dict[int, dict] | None = None) -> ForgettingReport:
    """`ledger`: version -> doc -> accuracy; `learned_at`: doc -> version that learned it; `base`: doc ->
    accuracy of the untouched model (version 0), reported beside the matrix; `general`: version ->
    {canary, drift} (version 0 = the untouched model)."""
    general = general or {}
    versions = sorted(set(v for v in ledger if v > 0) | set(v for v in general if v > 0))
    docs = sorted(learned_at, key=lambda d: (learned_at[d], d))
    pos = {v: i for i, v in enumerate(versions)}
    ledger = {v: ledger.get(v, {}) for v in set(ledger) | set(versions)}
    matrix = [[ledger[v].get(d) if learned_at[d] <= v else None for d in docs] for v in versions]
    avg, bwt = [], []
    for i, v in enumerate(versions):
        seen = [(d, ledger[v].get(d)) for d in docs if learned_at[d] <= v and ledger[v].get(d) is not None]
        avg.append(mean(a for _, a in seen) if seen else None)
        diffs = []
        for d, a in seen:
            lv = learned_at[d]
            if lv < v and lv in ledger and ledger[lv].get(d) is not None:
                diffs.append(a - ledger[lv][d])
        bwt.append(mean(diffs) if diffs else None)
    forgetting = {}
    if versions:
        last = versions[-1]
        for d in docs:
            hist = [ledger[v][d] for v in versions if learned_at[d] <= v < last and ledger[v].get(d) is not None]
            if hist and ledger[last].get(d) is not None:
                forgetting[d] = max(hist) - ledger[last][d]
    by_age: dict[int, list[float]] = {}
    for v in versions:
        for d in docs:
            lv = learned_at[d]
            if lv <= v and ledger[v].get(d) is not None and lv in pos:
                by_age.setdefault(pos[v] - pos[lv], []).append(ledger[v][d])
    g0 = general.get(0)
    return ForgettingReport(versions, docs, matrix, avg, bwt, forgetting,
                            {age: mean(xs) for age, xs in sorted(by_age.items())}, dict(base or {}),
                            [general[v]["canary"] if v in general else None for v in versions],
                            [general[v]["drift"] if v in general else None for v in versions],
                            g0["canary"] if g0 else None)


def plot(report: ForgettingReport, out_dir, formats=("png", "svg")) -> list:
    """Heatmap of the lower-triangular matrix, retention vs age, average accuracy and BWT over time."""
    matplotlib = require("matplotlib", "forgetting plots")

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    m = np.array([[np.nan if x is None else x for x in row] for row in report.matrix], dtype=float)
    if m.size == 0:
        m = np.full((1, 1), np.nan)
    im = axes[0].imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes[0].set_xlabel("document (learning order)")
    axes[0].set_ylabel("student version")
    axes[0].set_yticks(range(len(report.versions)), [f"v{v}" for v in report.versions])
    axes[0].set_title("probe accuracy R[version][document]")
    fig.colorbar(im, ax=axes[0])
    ages = list(report.retention_by_age)
    axes[1].plot(ages, [report.retention_by_age[a] for a in ages], marker="o")
    axes[1].set_xlabel("updates since learned")
    axes[1].set_ylabel("mean probe accuracy")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("retention by age")
    xs = report.versions
    axes[2].plot(xs, [np.nan if a is None else a for a in report.avg_accuracy], marker="o", label="average accuracy")
    axes[2].plot(xs, [np.nan if b is None else b for b in report.bwt], marker="s", label="BWT")
    if report.base:
        axes[2].axhline(mean(report.base.values()), ls="--", c="gray", label="untouched model")
    axes[2].axhline(0, c="black", lw=0.5)
    axes[2].set_xlabel("student version")
    axes[2].legend()
    axes[2].set_title("average accuracy and backward transfer")
    ax = axes[3]
    ax.plot(xs, [np.nan if c is None else 100 * c for c in report.canary], marker="o", c="tab:green",
            label="canary accuracy (%)")
    if report.canary_base is not None:
        ax.axhline(100 * report.canary_base, ls="--", c="gray", label="untouched model")
    ax.set_ylim(0, 105)
    ax.set_xlabel("student version")
    ax.set_ylabel("canary accuracy (%)")
    ax.set_title("general ability: canary and drift")
    ax2 = ax.twinx()
    ax2.plot(xs, [np.nan if d is None else d for d in report.drift], marker="s", c="tab:red", label="drift (KL)")
    ax2.set_ylabel("drift: KL(base || version), nats/token")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower left")
    fig.tight_layout()
    paths = []
    for fmt in formats:
        p = out_dir / f"forgetting.{fmt}"
        fig.savefig(p, dpi=110)
        paths.append(p)
    plt.close(fig)
    return paths
