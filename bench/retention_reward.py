"""The retention-aware reward on a live stream (issue #5): does gain - lambda x forgetting pick different
self-edits than the gain alone, and what does that buy?

A sequence of passages is learned by the agent's online best-of-K (rl.online.samples = K candidate self-edits
per document, each trained on the current student), in naive mode (a plain stack, no replay, no gate) so
forgetting is not hidden by other defences. Every candidate's gain on its document and its forgetting on
the probes of the R most recently learned documents (rl.retention_docs) are recorded, whichever lambda the
run selects with. So at every decision, on the same parent state, we can say which candidate each lambda
would have kept: the table shows how often the choice changes, and the chosen candidates' mean gain and
forgetting, per lambda.

    python bench/retention_reward.py --out results/retention --length 6 --samples 3 --retention-docs 2 \
        --lam 1 --set runtime.threads=1

Ends with `RESULT decisions=... changed_at_lambda1=... forgetting_l0=... forgetting_l1=... gain_l0=... gain_l1=...`.
Resumable: a finished sequence is skipped (bench/continual.py's files).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (0.0, 0.5, 1.0, 2.0)


def choose(cands: list[dict], lam: float) -> dict:
    """The candidate the agent keeps at this lambda: the highest reward, ties to the first (as the agent)."""
    best = None
    for c in cands:
        r = c["gain"] - lam * c["forgetting"]
        if best is None or r > best[0]:
            best = (r, c)
    return best[1]


def counterfactual(decisions: list[list[dict]]) -> list[dict]:
    rows = []
    for lam in LAMBDAS:
        picks = [choose(d, lam) for d in decisions]
        base = [choose(d, 0.0) for d in decisions]
        rows.append({"lambda": lam, "decisions": len(decisions),
                     "changed": sum(p["k"] != b["k"] for p, b in zip(picks, base)),
                     "gain": statistics.mean(p["gain"] for p in picks) if picks else float("nan"),
                     "forgetting": statistics.mean(p["forgetting"] for p in picks) if picks else float("nan")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--sequences", type=int, default=1)
    ap.add_argument("--length", type=int, default=6)
    ap.add_argument("--samples", type=int, default=3, help="K candidate self-edits per document")
    ap.add_argument("--retention-docs", type=int, default=2)
    ap.add_argument("--lam", type=float, default=1.0, help="the lambda the stream itself selects with")
    ap.add_argument("--only", action="store_true", help="report what is there, run nothing")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    if args.samples < 2:
        ap.error("--samples must be >= 2: with one candidate there is nothing to choose")
    out = Path(args.out)
    if not args.only:
        cmd = [sys.executable, str(ROOT / "bench/continual.py"), "--config", args.config, "--mode", "naive",
               "--sequences", str(args.sequences), "--length", str(args.length), "--out", str(out),
               "--set", f"rl.online.samples={args.samples}", "--set", f"rl.retention_docs={args.retention_docs}",
               "--set", f"rl.retention_lambda={args.lam}", "--set", "rl.online.retrain_every=1000000"]
        for s in args.set:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True)
    decisions, guarded = [], 0
    for f in sorted((out / "naive").glob("seq*.json")):
        for u in json.loads(f.read_text())["updates"]:
            c = u.get("candidates") or []
            if len(c) >= 2:
                decisions.append(c)
                guarded += any(x["guarded_docs"] for x in c)
    if not decisions:
        print("no decisions with >= 2 measured candidates yet")
        return 1
    rows = counterfactual(decisions)
    (out / "retention_reward.json").write_text(json.dumps({"rows": rows, "guarded_decisions": guarded,
                                                           "decisions": decisions}, indent=1))
    print(f"{len(decisions)} decisions, {guarded} with earlier documents' probes to guard")
    print("| lambda | choice changed vs lambda 0 | chosen gain | chosen forgetting |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['lambda']:g} | {r['changed']}/{r['decisions']} | {r['gain']:+.3f} | {r['forgetting']:.3f} |")
    by = {r["lambda"]: r for r in rows}
    print(f"RESULT decisions={len(decisions)} changed_at_lambda1={by[1.0]['changed']} "
          f"forgetting_l0={by[0.0]['forgetting']:.4f} forgetting_l1={by[1.0]['forgetting']:.4f} "
          f"gain_l0={by[0.0]['gain']:.4f} gain_l1={by[1.0]['gain']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
