"""Adapter stack: frozen older adapters, exact consolidation, immutable versions, rollback, crash safety."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from student.consolidate import fold
from student.stack import CorruptAdapterError, StackError, StackStore, load_version
from tests.conftest import ROOT

DOCS = ["Zorblax river flows into the Quimby sea.", "The Frell market opens on Monday.",
        "Anna Berg painted the northern harbour.", "Carl Olsen repaired the old lighthouse."]
PROMPT = "Zorblax river flows into the Quimby sea near the Frell market"


def logits(student, names):
    ids = student.tokenizer([PROMPT], return_tensors="pt")
    with student.use(names) as m, torch.no_grad():
        return m(**ids).logits


@pytest.fixture()
def clean(runtime):
    st = runtime.student
    before = set(st.adapters())
    yield st
    for n in set(st.adapters()) - before:
        st.drop(n)


def test_stack_training_leaves_older_adapters_bit_identical(clean):
    st = clean
    st.train_adapter([DOCS[0]], "s0", seed=0)
    st.train_adapter([DOCS[1]], "s1", seed=1, stack=["s0"])
    snap = {n: p.detach().clone() for n, p in st.peft.named_parameters() if ".s0." in n or ".s1." in n}
    out_before = logits(st, ["s0", "s1"])
    st.train_adapter([DOCS[2]], "s2", seed=2, stack=["s0", "s1"])
    after = dict(st.peft.named_parameters())
    assert all(torch.equal(snap[n], after[n]) for n in snap)
    assert torch.equal(out_before, logits(st, ["s0", "s1"]))
    assert not torch.allclose(logits(st, ["s0", "s1", "s2"]), out_before)


def test_exact_fold_reproduces_the_stack_and_svd_reports_error(clean):
    st = clean
    names = []
    for i, d in enumerate(DOCS[:3]):
        st.train_adapter([d], f"f{i}", seed=i, stack=names)
        names.append(f"f{i}")
    want = logits(st, names)
    rep = fold(st, names, "folded")
    assert rep.rank_out == rep.rank_in == 3 * st.settings.rank and rep.rel_error == 0.0
    assert torch.allclose(logits(st, "folded"), want, atol=1e-4)
    small = fold(st, names, "folded-small", rank=st.settings.rank)
    assert small.rank_out == st.settings.rank and 0 < small.rel_error < 1
    assert not torch.allclose(logits(st, "folded-small"), want, atol=1e-4)


def test_versions_aliases_rollback_and_checksums(clean, tmp_path):
    st = clean
    store = StackStore(tmp_path / "stack")
    refs, outs = [], []
    with store.writer():
        for i, d in enumerate(DOCS[:2]):
            live = f"v{i}"
            st.train_adapter([d], live, seed=i, stack=[f"v{j}" for j in range(i)])
            refs.append(store.add_adapter(st, live, f"a{i + 1:05d}", [f"doc{i}"]))
            m = store.commit(refs, parent=i or None, note=f"learn doc{i}", move=("latest", "prod"))
            outs.append(logits(st, [f"v{j}" for j in range(i + 1)]))
    assert store.versions() == [1, 2] and store.aliases() == {"latest": 2, "prod": 2}
    assert store.resolve("prod").name == "student-v2" and store.resolve("student-v1").doc_ids == ["doc0"]
    with pytest.raises(StackError):
        store.resolve("staging")
    with pytest.raises(StackError, match="immutable"):
        store.add_adapter(st, "v0", "a00001", ["doc0"])
    # Rollback: prod back to v1; loading it from disk restores v1's outputs exactly.
    store.set_alias("prod", 1)
    for n in ("v0", "v1"):
        st.drop(n)
    names = load_version(store, st, store.resolve("prod"))
    assert torch.allclose(logits(st, names), outs[0], atol=1e-6)
    names2 = load_version(store, st, store.resolve("latest"))
    assert torch.allclose(logits(st, names2), outs[1], atol=1e-6)
    # Corruption is detected on load.
    f = store.adapter_dir("a00002") / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-7] + b"garbage")
    with pytest.raises(CorruptAdapterError, match="checksum"):
        store.verify(store.resolve("latest"))
    store.verify(store.resolve("student-v1"))


def test_kill_during_save_leaves_last_good_version_loadable(tiny_cfg, tmp_path):
    """SIGKILL a process in the middle of writing a new adapter + version: v1 stays intact and loadable."""
    root = tmp_path / "stack"
    script = textwrap.dedent(f"""
        import os, sys, time, json
        sys.path.insert(0, {str(ROOT)!r})
        from core.config import SealConfig
        from student.runtime import open_runtime
        from student.stack import StackStore
        cfg = SealConfig.model_validate(json.loads({json.dumps(tiny_cfg.model_dump_json())}))
        st = open_runtime(cfg).student
        store = StackStore({str(root)!r})
        st.train_adapter(["first document text"], "x1", seed=0)
        with store.writer():
            store.commit([store.add_adapter(st, "x1", "a00001", ["d1"])], None, move=("latest", "prod"))
        st.train_adapter(["second document text"], "x2", seed=1, stack=["x1"])
        import safetensors.torch as sft
        real = sft.save_file
        def slow_save(*a, **k):
            real(*a, **k)
            print("SAVING", flush=True)
            time.sleep(60)   # killed here: adapter files written into a temp folder, not yet renamed
        sft.save_file = slow_save
        import peft.utils.save_and_load, peft.peft_model
        peft.peft_model.safe_save_file = slow_save
        with store.writer():
            store.commit([store.add_adapter(st, "x1", "a00001b", ["d1"]), store.add_adapter(st, "x2", "a00002", ["d2"])], 1)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        if "SAVING" in line or p.poll() is not None:
            break
    assert "SAVING" in line, "child never reached the save"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    store = StackStore(root)
    assert store.versions() == [1] and store.aliases() == {"latest": 1, "prod": 1}
    store.verify(store.resolve("prod"))
    assert not (store.adapter_dir("a00001b") / "adapter_config.json").exists()


def test_a_nested_writer_does_not_deadlock_and_a_held_lock_times_out_with_a_reason(tmp_path):
    """Raw fcntl locks deadlocked a writer that called a writer in one process, and waited forever on a holder."""
    import subprocess
    import sys
    import threading

    from tests.conftest import ROOT

    store = StackStore(tmp_path / "stack", lock_timeout_s=1.0, update_timeout_s=1.0)
    done = threading.Event()

    def nested():
        with store.writer(), store.writer():
            done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(30)
    assert done.is_set(), "a writer inside a writer of the same store deadlocked"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from student.stack import StackStore; "
        "s = StackStore(sys.argv[2]); cm = s.updating(); cm.__enter__(); print('held', flush=True); "
        "time.sleep(60)"), str(ROOT), str(tmp_path / "stack")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StackError, match="held by another update"):  # after 1 s, not never
            with store.updating():
                pass
        with store.writer():  # the other lock is free meanwhile
            pass
    finally:
        holder.kill()
        holder.wait()
