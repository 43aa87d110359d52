"""CLI smoke tests on the tiny model: real commands, real files, exit codes."""
import json

from typer.testing import CliRunner

from cli.main import app
from core.io import read_jsonl
from tests.conftest import ROOT

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_eval_writes_records_summary_and_resumes(tiny_config_file, passages_file, tmp_path):
    out = tmp_path / "ev"
    r = run("eval", "--passages", passages_file, "--conditions", "none,passage,passage-repeat,self-edit",
            "--out", out, "-c", tiny_config_file)
    assert r.exit_code == 0, r.output
    recs = read_jsonl(out / "records.jsonl")
    n_q = sum(len(p["questions"]) for p in json.loads(passages_file.read_text()))
    assert len(recs) == 4 * n_q
    assert {"em", "f1", "contains", "recite", "answer", "gold"} <= set(recs[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["conditions"]) == {"none", "passage", "passage-repeat", "self-edit"}
    assert "self-edit - passage" in summary["paired"]
    units = read_jsonl(out / "units.jsonl")
    steps = {(u["doc_id"], u["condition"]): (u["train"] or {}).get("steps") for u in units}
    for doc in {u["doc_id"] for u in units}:
        assert steps[(doc, "passage-repeat")] == steps[(doc, "self-edit")]  # matched optimizer steps
    assert (out / "table.md").read_text().startswith("Passages: 2")
    assert (out / "config.yaml").is_file() and (out / "self_edits.jsonl").is_file()
    assert json.loads((out / "meta.json").read_text())["versions"]["peft"]
    # Rerun: nothing is redone, nothing duplicated.
    r2 = run("eval", "--passages", passages_file, "--conditions", "none,passage,passage-repeat,self-edit",
             "--out", out, "-c", tiny_config_file)
    assert r2.exit_code == 0 and len(read_jsonl(out / "records.jsonl")) == len(recs)


def test_eval_external_condition(tiny_config_file, tmp_path):
    out = tmp_path / "ext"
    edits = ROOT / "examples/self_edits.json"
    r = run("eval", "--passages", ROOT / "examples/passages.json", "--limit", 1,
            "--conditions", f"none,external:{edits}", "--out", out, "-c", tiny_config_file)
    assert r.exit_code == 0, r.output
    units = read_jsonl(out / "units.jsonl")
    ext = [u for u in units if u["condition"].startswith("external:")][0]
    # every unit, plus the passage (longer than the tiny model's 256-token window: trained as several windows)
    assert ext["units"] >= 5 and ext["units"] + 1 <= ext["train"]["sequences"] <= ext["units"] + 4


def test_eval_bad_input_exits_2_and_writes_nothing(tiny_config_file, passages_file, tmp_path):
    out = tmp_path / "nothing"
    for args in (["--conditions", "none,bogus"], ["--conditions", "external:/no/such.json"],
                 ["--conditions", "none,none"]):
        r = run("eval", "--passages", passages_file, *args, "--out", out, "-c", tiny_config_file)
        assert r.exit_code == 2, r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run("eval", "--passages", bad, "--out", out, "-c", tiny_config_file).exit_code == 2
    assert run("eval", "--passages", passages_file, "--out", out, "-c", tmp_path / "nope.yaml").exit_code == 2
    assert not out.exists()


def test_learn_then_ask_with_adapter(tiny_config_file, tmp_path):
    out = tmp_path / "learn"
    r = run("learn", ROOT / "examples/passages.json", "--self-edit-file", ROOT / "examples/self_edits.json",
            "--out", out, "-c", tiny_config_file)
    assert r.exit_code == 0, r.output
    assert "self-edit" in r.output and "adapter saved" in r.output
    info = json.loads((out / "learn.json").read_text())
    assert info["train"]["steps"] > 0 and len(info["after"]) == 5
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    r = run("ask", "Who wrote Walking Into Fresno?", "--adapter", out / "adapter", "-c", tiny_config_file)
    assert r.exit_code == 0 and r.output.strip(), r.output


def test_learn_and_ask_bad_input(tiny_config_file, tmp_path):
    assert run("learn", tmp_path / "missing.json", "-c", tiny_config_file).exit_code == 2
    assert run("learn", ROOT / "examples/passages.json", "--index", 7, "-c", tiny_config_file).exit_code == 2
    assert run("ask", "  ", "-c", tiny_config_file).exit_code == 2
    assert run("ask", "q?", "--adapter", tmp_path, "-c", tiny_config_file).exit_code == 2


def test_report_recomputes(tiny_config_file, passages_file, tmp_path):
    out = tmp_path / "ev"
    assert run("eval", "--passages", passages_file, "--conditions", "none,passage", "--limit", 1,
               "--out", out, "-c", tiny_config_file).exit_code == 0
    (out / "summary.json").unlink()
    r = run("report", out)
    assert r.exit_code == 0 and "passage - none" in r.output and (out / "summary.json").is_file()
    assert run("report", tmp_path).exit_code == 2


def test_continual_cli_flow(tiny_config_file, tmp_path):
    state = tmp_path / "state"
    sets = ["--set", f"continual.state_dir={state}", "--set", "continual.train_on=passage"]
    r = run("ingest", ROOT / "examples/passages.json", "-c", tiny_config_file, *sets)
    assert r.exit_code == 0, r.output
    r = run("ingest", ROOT / "examples/passages.json", "-c", tiny_config_file, *sets)  # idempotent
    assert r.exit_code == 0 and r.output.count("already learned") == 3, r.output
    r = run("forgetting", "-c", tiny_config_file, *sets)
    assert r.exit_code == 0 and "BWT" in r.output, r.output
    assert (state / "reports" / "forgetting.png").is_file()
    rep = json.loads((state / "reports" / "forgetting.json").read_text())
    assert rep["versions"] == [1, 2, 3] and len(rep["docs"]) == 3
    r = run("adapters", "-c", tiny_config_file, *sets)
    assert r.exit_code == 0 and "student-v3" in r.output
    from student.stack import StackStore

    aliases = StackStore(state / "stack").aliases
    assert run("promote", "student-v1", "-c", tiny_config_file, *sets).exit_code == 0
    assert aliases()["prod"] == 1  # the alias really moved
    r = run("promote", "student-v9", "-c", tiny_config_file, *sets)
    assert r.exit_code == 2 and "student-v9" in r.output and aliases()["prod"] == 1  # refused, nothing changed
    r = run("ask", "Who wrote Walking Into Fresno?", "--version", "prod", "-c", tiny_config_file, *sets)
    assert r.exit_code == 0, r.output
    assert run("promote", "3", "-c", tiny_config_file, *sets).exit_code == 0
    r = run("remove-doc", rep["docs"][1], "-c", tiny_config_file, *sets)
    assert r.exit_code == 0 and "(removed)" in r.output and "student-v4" in r.output, r.output
    assert run("remove-doc", "nope", "-c", tiny_config_file, *sets).exit_code == 2


def test_eval_shards_share_one_directory_and_can_skip_the_unrouted_canary(tiny_config_file, passages_file, tmp_path):
    out = tmp_path / "shards"
    base = ["eval", "--passages", passages_file, "--conditions", "none,passage", "--out", out,
            "-c", tiny_config_file, "--set", "continual.routing.enabled=true"]
    assert run(*base, "--shard", "0/2").exit_code == 0
    assert {u["passage"] for u in read_jsonl(out / "units.jsonl")} == {0}  # every other passage, from the first
    r = run(*base, "--shard", "1/2", "--no-unrouted-canary")
    assert r.exit_code == 0, r.output
    units = {(u["passage"], u["condition"]): u for u in read_jsonl(out / "units.jsonl")}
    assert set(units) == {(0, "none"), (0, "passage"), (1, "none"), (1, "passage")}  # indices kept: seeds match
    assert "canary_drop_unrouted" in units[(0, "passage")] and "canary_drop_unrouted" not in units[(1, "passage")]
    assert "routed_share" in units[(1, "passage")] and "canary_drop" in units[(1, "passage")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passages"] == 2 and summary["conditions"]["passage"]["n_unrouted"] == 1
    assert "over 1 passages" in (out / "table.md").read_text()
    bad = runner.invoke(app, [str(a) for a in [*base, "--shard", "2/2"]])
    assert bad.exit_code == 2 and "--shard" in bad.output
