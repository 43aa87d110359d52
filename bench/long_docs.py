"""Long documents (issue 27): each SQuAD article, all its paragraphs joined, learned as ONE document, against the
same paragraphs sent one by one as separate documents. Both are learned as `learn` trains (the configured recipe;
a long document is trained whole in titled parts) and graded as served: one router over every document of the
mode. Accuracy by position compares the first quarter of each article with the last (where a question's answer
paragraph starts, in words), and seconds per 1,000 words is the learning cost.

    python bench/long_docs.py --articles 4 [--config configs/default.yaml] [--set ...] [--recite] [--out DIR]

Resumes from DIR (each mode is a `seal eval` run directory). Ends with
RESULT articles=N words=... whole=... separate=... first_quarter=... last_quarter=... s_per_1k_words=...
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def articles(path: Path, n: int) -> list[tuple[str, list[dict]]]:
    """The first `n` articles (in file order) with at least two paragraphs, each with its paragraphs."""
    by: dict[str, list[dict]] = defaultdict(list)
    for p in json.loads(path.read_text()):
        by[p["title"]].append(p)
    return [(t, ps) for t, ps in by.items() if len(ps) >= 2][:n]


def joined(title: str, paragraphs: list[dict]):
    """One document from an article's paragraphs, and each question's position: the share of the article's words
    before the paragraph that holds its answer."""
    from core.documents import QA, Passage

    total = sum(len(p["context"].split()) for p in paragraphs)
    qs, pos, seen = [], [], 0
    for p in paragraphs:
        for q in p["questions"]:
            qs.append(QA(q["question"], q["answer"]))
            pos.append(seen / total)
        seen += len(p["context"].split())
    return Passage(title, "\n\n".join(p["context"] for p in paragraphs), tuple(qs)), pos, total


def run_mode(rt, cfg, passages, out: Path, recite: bool, general):
    from agent.experiment import EvalRun, parse_conditions

    run = EvalRun(rt, parse_conditions("learn", cfg.recipes), out, log=lambda m: print(m, flush=True),
                  progress=sys.stderr.isatty(), general=general, measure_general=False, unrouted=False,
                  passages=passages, recite=recite)
    out.mkdir(parents=True, exist_ok=True)
    run.run(passages)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--articles", type=int, default=4)
    ap.add_argument("--passages", type=Path, default=ROOT.parent / "shared/data/squad/dev-other-articles.json")
    ap.add_argument("--config", default=str(ROOT / "configs/default.yaml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--recite", action="store_true", help="grade the recite-then-read answers (learn+recite)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from core.config import apply_sets, load_config
    from core.documents import passage_from_dict
    from core.io import read_jsonl
    from evaluation.canary import GeneralMonitor
    from student.runtime import open_runtime

    cfg = apply_sets(load_config(args.config), args.set)
    out = args.out or ROOT / "results" / f"long-docs-{args.articles}"
    out.mkdir(parents=True, exist_ok=True)
    arts = articles(args.passages, args.articles)
    whole, positions, words = [], {}, 0
    separate = []
    for title, ps in arts:
        doc, pos, n = joined(title, ps)
        whole.append(doc)
        positions[doc.doc_id] = pos
        words += n
        separate += [passage_from_dict(p) for p in ps]
    rt = open_runtime(cfg)
    general = GeneralMonitor(cfg.continual.canary, cfg.train.retain, cfg.model.cache_dir)
    cond = "learn+recite" if args.recite else "learn"
    run_mode(rt, cfg, whole, out / "whole", args.recite, general)
    run_mode(rt, cfg, separate, out / "separate", args.recite, general)

    def rows(mode: str):
        return [r for r in read_jsonl(out / mode / "records.jsonl") if r["condition"] == cond and r["set"] == "squad"]

    w_rows, s_rows = rows("whole"), rows("separate")
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    first = [r["contains"] for r in w_rows if positions[r["doc_id"]][r["q"]] < 0.25]
    last = [r["contains"] for r in w_rows if positions[r["doc_id"]][r["q"]] >= 0.75]
    units = [u for u in read_jsonl(out / "whole" / "units.jsonl") if u["condition"] == "learn"]
    seconds = sum(u["seconds"]["total"] for u in units)
    res = {"articles": len(arts), "words": words, "questions": len(w_rows), "whole": 100 * mean([r["contains"] for r in w_rows]),
           "separate": 100 * mean([r["contains"] for r in s_rows]), "first_quarter": 100 * mean(first),
           "last_quarter": 100 * mean(last), "first_n": len(first), "last_n": len(last),
           "s_per_1k_words": 1000 * seconds / max(1, words), "condition": cond,
           "titles": [t for t, _ in arts]}
    res["whole_over_separate"] = res["whole"] / res["separate"] if res["separate"] else None
    res["last_over_first"] = res["last_quarter"] / res["first_quarter"] if res["first_quarter"] else None
    (out / "summary.json").write_text(json.dumps(res, indent=2))
    print(f"\n| mode | contains (%) | questions |\n|---|---|---|\n| whole article as one document | {res['whole']:.1f} | "
          f"{len(w_rows)} |\n| paragraphs one by one | {res['separate']:.1f} | {len(s_rows)} |\n"
          f"| whole: first quarter | {res['first_quarter']:.1f} | {len(first)} |\n"
          f"| whole: last quarter | {res['last_quarter']:.1f} | {len(last)} |\n")
    print(f"RESULT articles={res['articles']} words={words} whole={res['whole']:.1f} separate={res['separate']:.1f} "
          f"first_quarter={res['first_quarter']:.1f} last_quarter={res['last_quarter']:.1f} "
          f"s_per_1k_words={res['s_per_1k_words']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
