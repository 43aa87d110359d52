"""A stack version as one standard PEFT adapter (what a one-LoRA-per-request server takes), and its
immutable server-side name."""
import json
from dataclasses import replace

import pytest
import torch

from core.config import VLLMSettings
from serving.vllm_adapters import VLLMAdapters
from serving.backend import BackendError, VLLMClient
from student.export import fold_folders, read_factors
from student.stack import StackStore, load_version
from tests.test_stack import DOCS, logits


@pytest.fixture()
def versions(runtime, tmp_path):
    """A store with v1 = [a1] and v2 = [a1 merged into the base, a2]."""
    st = runtime.student
    before = set(st.adapters())
    store = StackStore(tmp_path / "stack")
    with store.writer():
        st.train_adapter([DOCS[0]], "x1", seed=0)
        r1 = store.add_adapter(st, "x1", "a00001", ["d1"])
        v1 = store.commit([r1], None, move=("latest", "prod"))
        st.train_adapter([DOCS[1]], "x2", seed=1, stack=["x1"])
        r2 = store.add_adapter(st, "x2", "a00002", ["d2"])
        v2 = store.commit([replace(r1, merged=True), r2], 1, move=("latest",))
    for n in ("x1", "x2"):
        st.drop(n)
    yield st, store, v1, v2
    st.restore_base()
    for n in set(st.adapters()) - before:
        st.drop(n)


def test_export_of_a_version_with_a_merged_adapter_equals_the_served_version(versions, tmp_path):
    st, store, v1, v2 = versions
    want = logits(st, load_version(store, st, v2))  # a1 in the base weights, a2 on top
    rep = fold_folders([store.adapter_dir(a.id) for a in v2.adapters], tmp_path / "one")
    assert rep.adapters == 2 and rep.rank_out == rep.rank_in == 2 * st.settings.rank and rep.rel_error == 0.0
    cfg = json.loads((tmp_path / "one" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == rep.rank_out and cfg["peft_type"] == "LORA"
    st.restore_base()  # the export is relative to the original base
    st.load(tmp_path / "one", "one")
    assert torch.allclose(logits(st, "one"), want, atol=1e-4)
    small = fold_folders([store.adapter_dir(a.id) for a in v2.adapters], tmp_path / "small", max_rank=8)
    assert small.rank_out == 8 and 0 < small.rel_error < 1
    assert json.loads((tmp_path / "small" / "adapter_config.json").read_text())["r"] == 8
    # the reported error is over every module's delta, computed here from the files themselves
    want, got = {}, read_factors(tmp_path / "small")[1]
    for a in v2.adapters:
        for mod, (B, A) in read_factors(store.adapter_dir(a.id))[1].items():
            want[mod] = want.get(mod, 0) + B @ A
    err = sum(float(((want[m] - got[m][0] @ got[m][1]) ** 2).sum()) for m in want)
    norm = sum(float((want[m] ** 2).sum()) for m in want)
    assert small.rel_error == pytest.approx((err / norm) ** 0.5, rel=1e-3)


def test_server_names_are_immutable_per_version_and_content(versions, tmp_path):
    st, store, v1, v2 = versions
    names = VLLMAdapters(VLLMClient("http://127.0.0.1:9"), store, VLLMSettings(), tmp_path / "exports")
    a, b = names.name_for(v1), names.name_for(v2)
    assert a.startswith("seal-student-v1-") and b.startswith("seal-student-v2-") and a != b
    assert names.name_for(store.manifest(1)) == a  # same version, same files: same name
    other = replace(v1, adapters=(replace(v1.adapters[0], files={"adapter_model.safetensors": "0" * 64}),))
    assert names.name_for(other) != a  # a rebuilt state dir's "v1" with other weights never reuses the name
    path = names.export(v2)
    assert path.name == b and (path / "adapter_model.safetensors").is_file()
    assert names.export(v2) == path  # written once
    with pytest.raises(BackendError, match="unreachable"):
        names.ensure(v1)  # no server at that port: a clear error, not a hang


def test_fold_of_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        fold_folders([], tmp_path / "x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(FileNotFoundError):
        fold_folders([tmp_path / "empty"], tmp_path / "y")
