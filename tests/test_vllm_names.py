"""vLLM adapter names (no server needed): a name is never reused, across API processes too."""
import pytest

def test_reload_names_differ_across_processes(tmp_path):
    """Two API processes each count their own re-loads: the names must still never repeat."""
    from core.config import VLLMSettings
    from serving.vllm_adapters import _NAME, VLLMAdapters
    from student.stack import StackStore

    store = StackStore(tmp_path / "stack")
    a = VLLMAdapters(None, store, VLLMSettings(), tmp_path / "a")
    b = VLLMAdapters(None, store, VLLMSettings(), tmp_path / "b")
    base = "seal-student-v3-0123456789"
    assert a.reload_name(base, 0) == b.reload_name(base, 0) == base  # first load: the plain name
    assert a.reload_name(base, 1) != b.reload_name(base, 1)
    assert _NAME.match(a.reload_name(base, 2)).group(1) == base


class _Server:
    """The three LoRA routes of a vLLM server, kept in a dict: enough to check which names this process loads,
    keeps and unloads (tests/test_vllm.py does the same against a real server)."""

    def __init__(self):
        self.adapters: dict[str, str] = {}

    def models(self):
        return [{"id": "tiny"}] + [{"id": n, "parent": "tiny"} for n in self.adapters]

    def load_lora(self, name, path):
        from pathlib import Path

        assert name not in self.adapters and (Path(path) / "adapter_config.json").is_file()
        self.adapters[name] = path

    def unload_lora(self, name):
        del self.adapters[name]


def test_routed_adapters_get_their_own_names_shared_across_versions_and_pinned_by_aliases(runtime, tmp_path):
    """With routing, the server holds each document's adapter alone: one name per adapter (the same in every
    version that lists it), loaded on first use, never evicted while an alias's version lists it."""
    from core.config import VLLMSettings
    from serving.vllm_adapters import _NAME, VLLMAdapters
    from student.stack import StackStore

    st = runtime.student
    store = StackStore(tmp_path / "stack")
    refs = []
    with store.writer():
        for i, text in enumerate(["Zorblax river flows into the Quimby sea.", "Anna Berg painted the harbour.",
                                  "Lactase splits lactose.", "The Frell market opens at dawn."]):
            st.train_adapter([text], f"w{i}", seed=i, settings=st.settings.model_copy(update={"epochs": 1}))
            refs.append(store.add_adapter(st, f"w{i}", f"a{i + 1:05d}", [f"d{i}"]))
            st.drop(f"w{i}")
        v1 = store.commit(refs[:2], None, move=("latest", "prod"))
        v2 = store.commit(refs, 1, move=())  # no alias points at v2
    server = _Server()
    names = VLLMAdapters(server, store, VLLMSettings(keep_loaded=1), tmp_path / "exports")
    n0 = names.ensure_adapter(v1, "a00001")
    assert n0 == names.ensure_adapter(v2, "a00001") == names.adapter_name(refs[0])  # one name across versions
    assert _NAME.match(n0).group(1) == n0 and n0.startswith("seal-student-doc-a00001-")
    assert n0 != names.adapter_name(refs[1]) and n0 != names.name_for(v1)
    assert names.base_model() == "tiny"  # our names never pass for the base
    with pytest.raises(KeyError):
        names.ensure_adapter(v1, "a00004")  # not in v1
    for a in ("a00002", "a00003", "a00004"):
        names.ensure_adapter(v2, a)
    held = set(server.adapters)
    # prod (v1) lists a00001 and a00002: pinned; of v2's others only keep_loaded=1 stays (the latest used)
    assert {names.adapter_name(refs[0]), names.adapter_name(refs[1]), names.adapter_name(refs[3])} == held
    again = names.ensure_adapter(v2, "a00003")  # unloaded before: loaded again under a new name
    assert again != names.adapter_name(refs[2]) and _NAME.match(again).group(1) == names.adapter_name(refs[2])
    # a cache hit reads nothing from disk (no alias file, no manifest): eviction runs after loads only
    reads = []
    real = store.aliases
    store.aliases = lambda: reads.append(1) or real()
    assert names.ensure_adapter(v2, "a00003") == again and reads == []
