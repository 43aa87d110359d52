"""Adapter storage precision (issue 27): do adapters stored in bfloat16 or float16 answer as the float32 ones do?

Takes the real adapters of a learner's state (a stack and its memory, e.g. what `bench/continual.py` leaves in
OUT/ours/seq0-state), stores each one again in each precision (train.adapter_dtype's writer), loads it back
(peft upcasts to float32) and asks it what the service asks: its recitation of the document and the document's
gold questions by recite-then-read, and the same questions answered directly. Compared with the float32 copy:
identical recitations, identical answers, containment, file size.

    python bench/adapter_dtype.py --state results/continual-recite-lean/ours/seq0-state [--limit 6]

Rows go to OUT/rows.jsonl as each adapter finishes (a rerun resumes); ends with
RESULT adapters=N bfloat16_same_answers=... float16_same_answers=... bfloat16_size=... (size: of float32's)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DTYPES = ("float32", "bfloat16", "float16")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, required=True, help="a learner's state folder (stack/ and memory.sqlite)")
    ap.add_argument("--passages", type=Path, default=ROOT.parent / "shared/data/squad/dev.json",
                    help="where the documents' gold questions are looked up by content (default: dev.json)")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "results/adapter-dtype")
    args = ap.parse_args(argv)

    from core.config import apply_sets, load_config
    from core.documents import load_passages
    from core.io import append_jsonl, read_jsonl
    from evaluation.closed_book import answer, answer_recited, grade_answers
    from memory.store import MemoryStore
    from student.adapters import store_as
    from student.runtime import open_runtime
    from student.stack import StackStore
    from teacher.passages import recitation_parts

    if not (args.state / "stack").is_dir() or not (args.state / "memory.sqlite").is_file():
        raise SystemExit(f"{args.state} is not a learner's state (needs stack/ and memory.sqlite)")
    cfg = apply_sets(load_config(args.config), args.sets)
    stack, mem = StackStore(args.state / "stack"), MemoryStore(args.state / "memory.sqlite")
    gold = {p.doc_id: p for p in load_passages(args.passages)}
    refs = [a for v in stack.versions() for a in stack.manifest(v).adapters if len(a.doc_ids) == 1]
    refs = list({a.id: a for a in refs}.values())[: args.limit]
    if not refs:
        raise SystemExit(f"{args.state}: the stack holds no single-document adapters")
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    done = {r["adapter"]: r for r in read_jsonl(rows_path)} if rows_path.exists() else {}
    rt = open_runtime(cfg)
    st, ev = rt.student, cfg.eval
    tmp = Path(tempfile.mkdtemp(prefix="dtype-", dir=args.out))
    try:
        for ref in refs:
            if ref.id in done:
                continue
            doc = mem.document(ref.doc_ids[0])
            p = gold.get(doc.doc_id)
            qas = list(p.questions) if p is not None else [q for q in mem.probes(doc.doc_id)]
            qs = [q.question for q in qas]
            row = {"adapter": ref.id, "title": doc.title, "questions": len(qs), "gold": p is not None}
            for dt in DTYPES:
                folder = tmp / dt
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(stack.adapter_dir(ref.id), folder)
                if dt != "float32":
                    for f in folder.glob("*.safetensors"):
                        store_as(f, dt)
                t = time.perf_counter()
                st.load(folder, "probe")
                try:
                    read, recitation = answer_recited(st, "probe", recitation_parts(doc), qs, ev.max_new_tokens,
                                                      ev.batch_size, cfg.serving.recite_parts)
                    direct = answer(st, "probe", qs, ev.max_new_tokens, ev.batch_size)
                finally:
                    st.drop("probe")
                row[dt] = {"bytes": sum(f.stat().st_size for f in folder.glob("*.safetensors")),
                           "recitation": recitation, "read": read, "direct": direct,
                           "read_contains": sum(g.contains for g in grade_answers(qas, read)) / max(1, len(qs)),
                           "direct_contains": sum(g.contains for g in grade_answers(qas, direct)) / max(1, len(qs)),
                           "seconds": round(time.perf_counter() - t, 1)}
            ref32 = row["float32"]
            for dt in DTYPES[1:]:
                r = row[dt]
                r["same_recitation"] = r["recitation"] == ref32["recitation"]
                r["same_read"] = sum(a == b for a, b in zip(r["read"], ref32["read"]))
                r["same_direct"] = sum(a == b for a, b in zip(r["direct"], ref32["direct"]))
                r["size_ratio"] = r["bytes"] / ref32["bytes"]
            append_jsonl(rows_path, row)
            done[ref.id] = row
            print(f"{ref.id} {doc.title[:30]!r}: " + "  ".join(
                f"{dt} recitation {'=' if row[dt]['same_recitation'] else '!='} read {row[dt]['same_read']}/"
                f"{len(qs)} direct {row[dt]['same_direct']}/{len(qs)}" for dt in DTYPES[1:]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        mem.close()
    rows = list(done.values())
    n_q = sum(r["questions"] for r in rows)
    summary = {"adapters": len(rows), "questions": n_q}
    print("\n| storage | file MiB | of float32 | same recitation | same answers (read) | same answers (direct) | "
          "read contains | direct contains |\n|---|---|---|---|---|---|---|---|")
    for dt in DTYPES:
        mib = sum(r[dt]["bytes"] for r in rows) / len(rows) / 2**20
        same_rec = sum(r[dt].get("same_recitation", True) for r in rows)
        same_read = sum(r[dt].get("same_read", r["questions"]) for r in rows)
        same_dir = sum(r[dt].get("same_direct", r["questions"]) for r in rows)
        rc = sum(r[dt]["read_contains"] * r["questions"] for r in rows) / max(1, n_q)
        dc = sum(r[dt]["direct_contains"] * r["questions"] for r in rows) / max(1, n_q)
        ratio = sum(r[dt]["bytes"] for r in rows) / sum(r["float32"]["bytes"] for r in rows)
        summary[dt] = {"file_mib": round(mib, 2), "size_ratio": round(ratio, 3), "same_recitations": same_rec,
                       "same_read": same_read, "same_direct": same_dir, "read_contains": round(rc, 4),
                       "direct_contains": round(dc, 4)}
        print(f"| {dt} | {mib:.1f} | {ratio:.2f} | {same_rec}/{len(rows)} | {same_read}/{n_q} | {same_dir}/{n_q} | "
              f"{100 * rc:.1f}% | {100 * dc:.1f}% |")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    b, h = summary["bfloat16"], summary["float16"]
    print(f"RESULT adapters={len(rows)} questions={n_q} bfloat16_same_answers={b['same_read']}/{n_q} "
          f"float16_same_answers={h['same_read']}/{n_q} bfloat16_same_recitations={b['same_recitations']}/{len(rows)} "
          f"bfloat16_size={b['size_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
