import torch

from student.models import ModelSourceError, resolve_folder
from student.sequences import IGNORE, collate, epoch_batches, tokenize_sequences
from core.settings.student import ModelSettings, TrainSettings
from student.tiny import build_tiny_model
import pytest
import random

FACT = "Zorblax river flows into the Quimby sea near the town of Frell."


def test_collate_masks_padding_out_of_the_loss():
    b = collate([[5, 6, 7], [8]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b.labels.tolist() == [[5, 6, 7], [8, IGNORE, IGNORE]]
    assert (b.real_tokens, b.pad_tokens) == (4, 2)


def test_epoch_batches_cover_everything_and_group_by_length():
    lengths = [random.Random(i).randint(5, 200) for i in range(64)]
    batches = epoch_batches(64, lengths, 4, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(64))
    grouped_pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    rng = random.Random(0)
    order = list(range(64))
    rng.shuffle(order)
    naive = [order[i:i + 4] for i in range(0, 64, 4)]
    naive_pad = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in naive)
    assert grouped_pad < naive_pad / 2


def test_tokenize_appends_eos_and_trains_a_long_text_whole_in_windows(runtime):
    tok = runtime.student.tokenizer
    long = " ".join(f"w{i}" for i in range(300))
    seqs = tokenize_sequences(tok, [FACT, long], max_len=32)
    assert seqs[0][-1] == tok.eos_token_id
    want = tok(long, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert all(len(s) <= 32 for s in seqs[1:]) and len(seqs) > 2
    assert [t for s in seqs[1:] for t in s] == want  # every token, in order, nothing cut


def test_tiny_builder_is_cached(cache_dir):
    a = build_tiny_model(cache_dir)
    mtime = (a / "config.json").stat().st_mtime
    assert build_tiny_model(cache_dir) == a and (a / "config.json").stat().st_mtime == mtime


def test_model_source_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="allow_download"):
        resolve_folder(ModelSettings(source="someorg/some-model", cache_dir=str(tmp_path)))
    with pytest.raises(ModelSourceError, match="not found"):
        resolve_folder(ModelSettings(source=str(tmp_path / "x.gguf"), cache_dir=str(tmp_path)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="config.json"):
        resolve_folder(ModelSettings(source=str(tmp_path / "empty"), cache_dir=str(tmp_path)))


def _greedy(student, adapter, prompt, n=12):
    tok = student.tokenizer
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with student.use(adapter) as m:
        out = m.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_lora_training_learns_the_text_and_leaves_base_alone(runtime):
    st = runtime.student
    base_before = _greedy(st, None, "Zorblax river flows")
    stats = st.train_adapter([FACT], "learn-fact", seed=0, settings=st.settings.model_copy(update={"epochs": 30}))
    try:
        assert stats.losses[-1] < stats.losses[0] * 0.9  # tiny random model: flat softmax, argmax learns first
        assert _greedy(st, "learn-fact", "Zorblax river flows").startswith(" into the Quimby sea")
        assert _greedy(st, None, "Zorblax river flows") == base_before
        assert not any(p.requires_grad for p in st.model.parameters())
    finally:
        st.drop("learn-fact")


def test_training_is_deterministic_for_a_seed(runtime):
    st = runtime.student
    texts = [FACT, "The committee met on Monday and voted to build a library."]
    a = st.train_adapter(texts, "det-a", seed=3)
    b = st.train_adapter(texts, "det-b", seed=3)
    c = st.train_adapter(texts, "det-c", seed=4)
    for n in ("det-a", "det-b", "det-c"):
        st.drop(n)
    assert a.losses == b.losses
    assert a.losses != c.losses


def test_other_adapters_stay_frozen_while_a_new_one_trains(runtime):
    st = runtime.student
    st.train_adapter([FACT], "frozen-1", seed=0)
    snap = {n: p.detach().clone() for n, p in st.peft.named_parameters() if ".frozen-1." in n}
    st.train_adapter(["The moon orbits the earth."], "frozen-2", seed=1)
    try:
        after = {n: p for n, p in st.peft.named_parameters() if ".frozen-1." in n}
        assert snap and all(torch.equal(snap[n], after[n]) for n in snap)
    finally:
        st.drop("frozen-1")
        st.drop("frozen-2")


def test_save_and_load_round_trip(runtime, tmp_path):
    st = runtime.student
    st.train_adapter([FACT], "saved", seed=0, settings=st.settings.model_copy(update={"epochs": 20}))
    want = _greedy(st, "saved", "Zorblax river")
    path = st.save("saved", tmp_path / "adapter")
    st.drop("saved")
    assert (path / "adapter_config.json").is_file() and not list(tmp_path.glob(".adapter-*"))
    st.load(path, "reloaded")
    try:
        assert _greedy(st, "reloaded", "Zorblax river") == want
    finally:
        st.drop("reloaded")


def test_a_bfloat16_stored_adapter_is_half_the_file_and_loads_as_the_rounded_float32_weights(runtime, tmp_path):
    import torch
    from safetensors.torch import load_file

    from student.adapters import adapter_memory_bytes

    st = runtime.student
    st.train_adapter([FACT], "full", seed=0, settings=st.settings.model_copy(update={"epochs": 5}))
    stored = st.settings.adapter_dtype
    try:
        st.settings = st.settings.model_copy(update={"adapter_dtype": "float32"})
        p32 = st.save("full", tmp_path / "f32")
        st.settings = st.settings.model_copy(update={"adapter_dtype": "bfloat16"})
        p16 = st.save("full", tmp_path / "bf16")
    finally:
        st.settings = st.settings.model_copy(update={"adapter_dtype": stored})
    st.drop("full")
    (f32,), (f16,) = list(p32.glob("*.safetensors")), list(p16.glob("*.safetensors"))
    w32, w16 = load_file(str(f32)), load_file(str(f16))
    assert {v.dtype for v in w16.values()} == {torch.bfloat16} and f16.stat().st_size < 0.55 * f32.stat().st_size
    assert adapter_memory_bytes(p16) == adapter_memory_bytes(p32) == sum(v.numel() * 4 for v in w32.values())
    st.load(p16, "lowp")
    try:
        live = {n: q for n, q in st.peft.named_parameters() if ".lowp." in n}
        assert live and all(q.dtype == torch.float32 for q in live.values())  # upcast on load
        rounded = {k: v.to(torch.bfloat16).float() for k, v in w32.items()}
        for n, q in live.items():
            key = next(k for k in rounded if k.replace(".weight", "") in n.replace(".lowp", ""))
            assert torch.equal(q.detach(), rounded[key])
    finally:
        st.drop("lowp")


def test_batched_training_pads_only_what_it_must(runtime):
    st = runtime.student
    texts = ["short one here.", FACT, "A much longer sentence " * 6, "tiny", "another medium sized line of text."]
    s = st.train_adapter(texts, "b3", seed=0, settings=st.settings.model_copy(update={"batch_size": 3, "epochs": 2}))
    st.drop("b3")
    assert s.steps == 4 and s.pad_tokens > 0 and 0 < s.padding_fraction < 0.6


def test_invalid_train_settings():
    with pytest.raises(ValueError):
        TrainSettings(target_modules=[])
    with pytest.raises(ValueError):
        TrainSettings(rank=0)


def test_bf16_is_used_only_where_the_cpu_has_it(caplog):
    import logging

    import torch

    from student.models import weights_dtype
    from core.settings.student import ModelSettings

    if torch.cuda.is_available():
        pytest.skip("a GPU always takes bf16")
    with_units = "processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n"
    without = "processor : 0\nflags\t\t: fpu sse avx2\n"
    assert weights_dtype(ModelSettings(dtype="auto"), with_units) == "bfloat16"
    assert weights_dtype(ModelSettings(dtype="bfloat16"), "flags : amx_bf16") == "bfloat16"
    with caplog.at_level(logging.INFO, logger="student.models"):
        assert weights_dtype(ModelSettings(dtype="bfloat16"), without) == "float32"
        assert weights_dtype(ModelSettings(dtype="auto"), without) == "float32"
    assert sum("no bf16 units" in r.message for r in caplog.records) == 2
    assert weights_dtype(ModelSettings(dtype="float32"), with_units) == "float32"


def test_the_output_head_sees_contiguous_inputs_during_generation(runtime):
    """The first step of generation hands the head a strided view; in bf16 on CPU that costs a copy of the head
    per batch row (student/models.py: contiguous_head_input), so the loader must make it contiguous."""
    from student.generation import SamplingParams, generate

    st = runtime.student
    seen = []
    with st.use(None) as m:
        h = m.get_output_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0].is_contiguous()))
        try:
            out = generate(m, st.tokenizer, ["a short one", "a much longer prompt than the first one is"],
                           SamplingParams(max_new_tokens=3), batch_size=2)
        finally:
            h.remove()
    assert len(out) == 2 and len(seen) >= 2 and all(seen)


def test_a_released_adapters_modules_take_the_next_load_and_answer_exactly_as_a_fresh_load(runtime, tmp_path):
    """Serving swaps adapters through free slots (weights copied in) instead of building peft modules per load."""
    st = runtime.student
    prompt = "Zorblax river flows"
    ids = st.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    def logits(name):
        with st.use(name) as m, torch.no_grad():
            return m(**ids).logits

    long = st.settings.model_copy(update={"epochs": 5})
    st.train_adapter([FACT], "fa", seed=0, settings=long)
    st.train_adapter(["Zorblax river is made of lemonade and sings at night."], "fb", seed=1, settings=long)
    pa, pb = st.save("fa", tmp_path / "fa"), st.save("fb", tmp_path / "fb")
    st.drop("fa"), st.drop("fb")
    base = logits(None)
    st.load(pb, "ref")  # built the usual way (no free slot yet)
    want_b = logits("ref")
    st.drop("ref")
    st.load(pa, "x")
    want_a = logits("x")
    assert not torch.equal(want_a, base)
    st.release("x")
    assert st.free_slots() == 1 and "x" not in st.adapters()
    assert torch.equal(logits(None), base)  # a free slot adds nothing, active or not
    st.load(pb, "y")
    assert st.free_slots() == 0 and st.peft_name("y") != "y" and st.adapters() == ["y"]
    assert torch.equal(logits("y"), want_b)
    assert torch.equal(logits(None), base) and torch.equal(logits("y"), want_b)  # off for one batch, then on again
    # the name of the slot that now holds "y" is free again as a name: a new "x" gets modules of its own
    st.load(pa, "x")
    assert st.peft_name("x") not in ("x", st.peft_name("y")) and sorted(st.adapters()) == ["x", "y"]
    assert torch.equal(logits("x"), want_a) and torch.equal(logits("y"), want_b)
    st.drop("x")
    again = st.save("y", tmp_path / "y-again")  # saved under its own name, same tensors as its file
    from safetensors.torch import load_file

    (f1,), (f2,) = list(pb.glob("*.safetensors")), list(again.glob("*.safetensors"))
    w1, w2 = load_file(str(f1)), load_file(str(f2))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    # a slot of another shape is not reused: the load builds modules and the slot stays free
    st.release("y")
    st.train_adapter([FACT], "r2", seed=2, settings=st.settings.model_copy(update={"rank": 2, "alpha": 2}))
    p2 = st.save("r2", tmp_path / "r2")
    st.drop("r2")
    st.load(p2, "z")
    assert st.peft_name("z") == "z" and st.free_slots() == 1
    st.drop("z")
    st.drop_free_slots()
    assert st.adapters() == [] and torch.equal(logits(None), base)
