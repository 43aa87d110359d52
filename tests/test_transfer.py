"""`seal export` on one state, `seal import` on a fresh one: the imported version answers as the source did."""
import io
import json
import tarfile

import pytest
from typer.testing import CliRunner


DOCS = [{"title": "Zorblax", "context": "The Zorblax river flows into the Quimby sea near Frell.",
         "questions": [{"question": "Where does the Zorblax flow?", "answer": "Quimby sea"}]},
        {"title": "Harbour", "context": "Anna Berg painted the northern harbour in winter.",
         "questions": [{"question": "Who painted the harbour?", "answer": "Anna Berg"}]}]
ASK = ["Where does the Zorblax flow?", "Who painted the harbour?", "What is the capital of France?"]
PROMPTS = ["The Zorblax river flows", "Anna Berg painted the", "The capital of France is"]  # raw continuations


def _cfg(tiny_cfg, state):
    return tiny_cfg.with_overrides(continual={**tiny_cfg.continual.model_dump(), "train_on": "passage",
                                              "state_dir": str(state)}, runtime={"threads": 1})


def _answers(cfg, model: str) -> list[str]:
    from agent.service import Agent

    agent = Agent.open(cfg)
    try:
        out = [agent.server.generate(model, p, 8, route_text=q) for p, q in zip(PROMPTS, ASK)]
        return [(g.text, bool(g.adapters)) for g in out]
    finally:
        agent.close()


def test_export_then_import_on_a_fresh_state_answers_the_same(tiny_cfg, tmp_path):
    from agent.service import Agent
    from agent.transfer import BundleError, export_version, import_bundle
    from core.documents import load_passages

    from agent.continual import open_learner
    from student.runtime import open_runtime

    src = _cfg(tiny_cfg, tmp_path / "a")
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(DOCS))
    learner = open_learner(open_runtime(src).student, src)
    try:
        for p in load_passages(path):
            res = learner.learn(p)
            assert res.status == "promoted", res.reason
    finally:
        learner.memory.close()
    before = _answers(src, "seal-student@prod")
    assert before != _answers(src, "base")  # the adapters change answers, so equal answers below mean something

    m, bundle = export_version(src, "prod", tmp_path / "out" / "v.tar")
    assert bundle.is_file() and len(m.doc_ids) == 2
    dst = _cfg(tiny_cfg, tmp_path / "b")
    Agent.open(dst).close()  # a fresh state
    r = import_bundle(dst, bundle)
    assert (r.version, r.documents, r.again) == (1, 2, False)
    assert _answers(dst, r.name) == before
    assert import_bundle(dst, bundle).again  # the same bundle twice: one version

    # a bundle changed after export, or learned on another base, is refused before anything is written
    bad = tmp_path / "bad.tar"
    with tarfile.open(bundle) as t_in, tarfile.open(bad, "w") as t_out:
        for member in t_in.getmembers():
            data = t_in.extractfile(member).read()
            if member.name.endswith(".safetensors"):
                data = data[:-8] + b"corrupt!"
            member.size = len(data)
            t_out.addfile(member, io.BytesIO(data))
    fresh = _cfg(tiny_cfg, tmp_path / "c")
    with pytest.raises(BundleError, match="checksum"):
        import_bundle(fresh, bad)
    other = fresh.with_overrides(model={**fresh.model.model_dump(), "source": "embedded:smollm2"})
    with pytest.raises(BundleError, match="learned on"):
        import_bundle(other, bundle)
    assert not (tmp_path / "c" / "stack" / "versions").exists() or not any((tmp_path / "c" / "stack" / "versions").iterdir())


def test_the_cli_exports_and_imports_with_clear_errors(tiny_config_file, tmp_path):
    from cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["import", str(tmp_path / "missing.tar"), "-c", str(tiny_config_file),
                            "--set", f"continual.state_dir={tmp_path / 's'}"])
    assert r.exit_code == 2 and "no such bundle" in r.output
    r = runner.invoke(app, ["export", "prod", "--out", str(tmp_path / "x.tar"), "-c", str(tiny_config_file),
                            "--set", f"continual.state_dir={tmp_path / 'none'}"])
    assert r.exit_code == 2 and "no agent state" in r.output
