"""vLLM adapter names (no server needed): a name is never reused, across API processes too."""
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
