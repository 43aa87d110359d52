import json

import pytest

from core.config import ConfigError, SealConfig, load_config
from core.documents import DocumentFormatError, load_passages, passage_from_dict
from tests.conftest import ROOT


def test_shipped_configs_validate():
    d = load_config(ROOT / "configs/default.yaml")
    assert d.model.source == "embedded:smollm2"
    assert (d.train.rank, d.train.alpha, d.train.learning_rate, d.train.epochs) == (32, 64, 1e-3, 10)
    assert d.train.target_modules == "all-linear"
    assert load_config(ROOT / "configs/tiny.yaml").model.source == "tiny"


def test_code_defaults_match_default_yaml():
    # `seal` without configs/ falls back to SealConfig(); it must mean the same thing as default.yaml.
    assert SealConfig().model_dump() == load_config(ROOT / "configs/default.yaml").model_dump()


@pytest.mark.parametrize("text,needle", [
    ("train:\n  rank: 0\n", "rank"),
    ("train:\n  rnak: 4\n", "rnak"),
    ("- just a list\n", "mapping"),
    ("train: [unclosed\n", "YAML"),
])
def test_bad_configs_are_rejected_with_reason(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_load_passages_single_and_list(tmp_path):
    one = {"title": "T", "context": "Some text.", "questions": [{"question": "Q?", "answer": "A"}]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "many.json").write_text(json.dumps([one, {"context": "Other."}]))
    assert len(load_passages(tmp_path / "one.json")) == 1
    many = load_passages(tmp_path / "many.json")
    assert many[1].title == "Untitled" and many[1].questions == ()
    assert many[0].doc_id == load_passages(tmp_path / "one.json")[0].doc_id


@pytest.mark.parametrize("content,needle", [
    ("not json", "not valid JSON"),
    ("[]", "no passages"),
    ('[{"title": "x"}]', "context"),
    ('[{"context": "c", "questions": [{"question": "q"}]}]', "answer"),
    ('[{"context": "c", "questions": "q"}]', "list"),
    ("[1]", "expected an object"),
])
def test_malformed_documents(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DocumentFormatError, match=needle):
        load_passages(p)


def test_doc_id_depends_on_content():
    a = passage_from_dict({"title": "T", "context": "x"})
    b = passage_from_dict({"title": "T", "context": "y"})
    assert a.doc_id != b.doc_id and len(a.doc_id) == 16


def test_set_overrides_are_validated():
    from core.config import apply_sets

    cfg = apply_sets(SealConfig(), ["runtime.threads=1", "teacher.grounding.min_support=0.5", "train.target_modules=[q_proj]"])
    assert cfg.runtime.threads == 1 and cfg.teacher.grounding.min_support == 0.5
    assert cfg.train.target_modules == ["q_proj"]
    for bad, needle in (["nokey"], "section.key=value"), (["train.nope=1"], "unknown key"), (
            ["x.y=1"], "no config section"), (["train.epochs=-1"], "invalid"):
        with pytest.raises(ConfigError, match=needle):
            apply_sets(SealConfig(), bad)


def test_run_folders_never_hold_api_keys(tmp_path):
    from core.config import load_config
    from core.runs import new_run_dir

    cfg = load_config(ROOT / "configs/default.yaml")
    cfg = cfg.with_overrides(service={**cfg.service.model_dump(), "api_keys": {"very-secret-key-1": "write"}})
    out = new_run_dir(cfg, "t", tmp_path / "run")
    text = (out / "config.yaml").read_text()
    assert "very-secret-key-1" not in text and "1 key(s) left out" in text
    assert load_config(out / "config.yaml").service.api_keys == {}
