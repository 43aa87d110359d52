"""ARC tool-spec self-edits: transforms invert exactly, specs validate with reasons, voting, the LOO/L2O
builder's counts, task files, and test-time training that solves a task by construction (tiny model)."""
import random

import pytest

from tasks.arc import augment as A
from tasks.arc.grids import ArcFormatError, Example, Task, as_grid, grid_text, load_tasks, parse_grid
from tasks.arc.solve import majority, run_spec
from tasks.arc.spec import ORACLE, SpecError, ToolSpec, check_budget, parse_spec
from tasks.arc.ttt_data import build, sub_tasks
from tests.conftest import ROOT

ARC = ROOT.parent / "shared" / "data" / "arc"


def rand_grid(rng, h=None, w=None):
    h, w = h or rng.randint(1, 7), w or rng.randint(1, 7)
    return tuple(tuple(rng.randint(0, 9) for _ in range(w)) for _ in range(h))


def test_every_transform_inverts_exactly_on_random_grids():
    rng = random.Random(0)
    ts = A.catalogue(True, True, True, True, colours=3)
    assert {t.kind for t in ts} == {"identity", "basic", "size", "chain", "repeat", "colour"}
    for _ in range(40):
        g = rand_grid(rng)
        for t in ts:
            assert t.inverse(t.forward(g)) == g, t.name
    sq = rand_grid(rng, 3, 3)
    assert A.rot90(A.rot90(A.rot90(A.rot90(sq)))) == sq and A.rot90(A.rot270(sq)) == sq
    assert A.rot90(((1, 2), (3, 4))) == ((3, 1), (4, 2))  # clockwise
    assert A.anti_transpose(((1, 2), (3, 4))) == ((4, 2), (3, 1))
    # a grid the forward map cannot produce does not invert (it drops out of the vote)
    assert A.downscale(((1, 2), (3, 4)), 2, 2) is None and A.untile(((1, 2, 3, 4),), 1, 2) is None


def test_grid_text_round_trip_and_malformed_answers():
    g = as_grid([[0, 1, 2], [3, 4, 5]])
    assert grid_text(g) == "012\n345" and parse_grid(grid_text(g) + "\n\nInput:") == g
    assert parse_grid("no grid here") is None and parse_grid("12\n345") is None
    with pytest.raises(ArcFormatError):
        as_grid([[1, 2], [3]])
    with pytest.raises(ArcFormatError):
        as_grid([[10]])


def test_specs_validate_with_a_reason_and_over_budget_specs_are_rejected():
    s = parse_spec('Here: {"augmentations": {"basic": true}, "training": {"learning_rate": 0.001, "epochs": 2, '
                   '"loss": "all_tokens"}} done')
    assert s.augmentations.basic and s.training.epochs == 2 and s.training.loss == "all_tokens"
    assert parse_spec("{}") == ToolSpec()  # every field has a default
    for bad, why in [("nothing", "no JSON"), ('{"augmentations": {"basic": "maybe"}}', "augmentations.basic"),
                     ('{"training": {"learning_rate": 5}}', "training.learning_rate"),
                     ('{"training": {"epochs": 0}}', "training.epochs"),
                     ('{"training": {"loss": "some"}}', "training.loss"), ('{"colour": true}', "colour"),
                     ("{not json}", "does not parse")]:
        with pytest.raises(SpecError, match=why):
            parse_spec(bad)
    check_budget(ORACLE, 10, 100)
    with pytest.raises(SpecError, match="budget"):
        check_budget(ORACLE, 50, 100)


def test_voting_picks_the_majority_and_keeps_two_attempts():
    a, b, c = ((1,),), ((2,),), ((3,),)
    assert majority([a, b, b, None, c, b, a]) == [b, a]
    assert majority([c, a, a, c], attempts=1) == [c]  # a tie goes to the earlier answer
    assert majority([None, None]) == []


def _task(n=3, side=3, seed=0):
    rng = random.Random(seed)
    ex = []
    for _ in range(n):
        g = rand_grid(rng, side, side)
        ex.append(Example(g, A.flip_h(g)))
    x = rand_grid(rng, side, side)
    return Task("flip", tuple(ex), (x,), (A.flip_h(x),))


def test_leave_one_and_two_out_builder_counts():
    t = _task(n=4)
    subs = sub_tasks(t)
    assert len(subs) == 4 + 2 * 6  # n leave-one-out + 2 per pair leave-two-out
    assert len(sub_tasks(t, leave_two_out=False)) == 4
    assert all(len(d) == 3 for n, d, q in subs if n.startswith("loo"))
    assert all(q not in d for _, d, q in subs)  # the hidden demonstration is never shown
    count = lambda s: len(s)  # noqa: E731 - characters stand in for tokens
    plain = build(t, ToolSpec(), count, 1000, 10_000, seed=0)
    assert plain.candidates == 16 and len(plain.examples) == 16 and plain.duplicates == 0
    basic = build(t, ToolSpec(augmentations={"basic": True}), count, 1000, 10_000, seed=0)
    assert basic.candidates == 16 * 8 and len(basic.examples) + basic.duplicates == 16 * 8
    capped = build(t, ToolSpec(augmentations={"basic": True}), count, 20, 10_000, seed=0)
    assert len(capped.examples) == 20 and capped.capped == len(basic.examples) - 20
    short = build(t, ToolSpec(), count, 1000, 60, seed=0)
    assert short.too_long == 16 and not short.examples
    big = _task(n=2, side=20)
    up = build(big, ToolSpec(augmentations={"size": True}), count, 1000, 100_000, seed=0)
    assert up.too_big == 2 * 3 and len(up.examples) == 2  # 20x20 upscaled by 2 exceeds 30x30; identity fits


@pytest.mark.skipif(not ARC.is_dir(), reason="../shared/data/arc not present")
def test_loads_the_12_task_subset_with_solutions():
    tasks = load_tasks(ARC / "arc-agi_training_challenges_filtered_1B_training_set.json",
                       ARC / "arc-agi_training_solutions_filtered_1B_training_set.json")
    assert len(tasks) == 12 and all(t.test_outputs and len(t.test_outputs) == len(t.test_inputs) for t in tasks)
    t = tasks[0]
    assert t.solved_by([[t.test_outputs[i]] for i in range(len(t.test_inputs))])
    assert not t.solved_by([[] for _ in t.test_inputs])


def test_test_time_training_solves_a_task_the_untrained_model_cannot(runtime, tiny_cfg):
    """By construction: every output is the same 2x2 grid of 7s. The random tiny model cannot write it in
    context; a LoRA trained on the task's leave-one-out views writes it."""
    st = runtime.student
    rng = random.Random(1)
    out = ((7, 7), (7, 7))
    t = Task("const", tuple(Example(rand_grid(rng, 2, 2), out) for _ in range(4)), (rand_grid(rng, 2, 2),), (out,))
    s = tiny_cfg.arc.model_copy(update={"max_seq_len": 256, "rank": 8})
    icl = run_spec(st, t, None, s, seed=0)
    assert not icl.solved
    # all-token loss: the demonstrations in each prompt also teach where a grid ends (the blank line)
    spec = ToolSpec(augmentations={"basic": True}, training={"learning_rate": 3e-3, "epochs": 4, "loss": "all_tokens"})
    res = run_spec(st, t, spec, s, seed=0)
    assert res.solved, res.predictions
    assert res.ttt_examples > 0 and res.steps == res.ttt_examples * 4 and res.seconds["train"] > 0
    assert "arc-ttt" not in st.adapters()  # the task's adapter is dropped
    over = run_spec(st, t, spec, s.model_copy(update={"max_steps": 5}), seed=0)
    assert not over.solved and "budget" in over.rejected


def test_cli_eval_rl_report_resume_and_bad_input(tiny_config_file, tmp_path):
    import json

    from typer.testing import CliRunner

    from cli.main import app

    cli = CliRunner()
    r = cli.invoke(app, ["arc", "synth", "--rule", "flip_h", "--n", "2", "--side", "2", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    tasks = tmp_path / "synthetic-flip_h_challenges.json"
    sets = ["-c", str(tiny_config_file), "--set", "arc.spec_max_new_tokens=24", "--set", "arc.max_examples=8",
            "--set", "arc.max_tries=2"]
    run = tmp_path / "eval"
    r = cli.invoke(app, ["arc", "eval", "--tasks", str(tasks), "--samples", "2", "--out", str(run), *sets])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (1 + 2 + 1)  # per task: icl, K=2 ttt, oracle
    ttt = [x for x in rows if x["condition"] == "ttt"]
    assert all(x["tries"] >= 1 and (x["spec"] or x["invalid"]) for x in ttt)  # every invalid sample counted
    assert {x["raw"] for x in ttt if x["task"].endswith("-0")} != {x["raw"] for x in ttt if x["task"].endswith("-1")}
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {"icl", "ttt", "oracle"} and summary["ttt"]["attempts"] == 4
    assert summary["oracle"]["seconds_per_self_edit"] > 0
    r = cli.invoke(app, ["arc", "eval", "--tasks", str(tasks), "--samples", "2", "--out", str(run), *sets])
    assert r.exit_code == 0 and len((run / "attempts.jsonl").read_text().splitlines()) == len(rows)  # resumed
    r = cli.invoke(app, ["arc", "report", str(run)])
    assert r.exit_code == 0 and r.output.strip().splitlines()[-1].startswith("RESULT icl=")
    rl_run = tmp_path / "rl"
    r = cli.invoke(app, ["arc", "rl", "--tasks", str(tasks), "--samples", "2", "--out", str(rl_run), *sets])
    assert r.exit_code == 0, r.output
    assert "round 0: teacher-v0" in r.output and (rl_run / "rounds.jsonl").is_file()
    shards = tmp_path / "shards"  # two processes' worth of tasks, one run directory
    for i in (0, 1):
        r = cli.invoke(app, ["arc", "eval", "--tasks", str(tasks), "--conditions", "icl", "--shard", f"{i}/2",
                             "--out", str(shards), *sets])
        assert r.exit_code == 0, r.output
    got = [json.loads(x)["task"] for x in (shards / "attempts.jsonl").read_text().splitlines()]
    assert sorted(got) == sorted({x["task"] for x in rows}) and len(got) == 2
    for bad in (["arc", "eval", "--tasks", str(tasks), "--shard", "2/2"],
                ["arc", "eval", "--tasks", str(tasks), "--shard", "half"],
                ["arc", "eval", "--tasks", str(tmp_path / "none.json")],
                ["arc", "eval", "--tasks", str(tasks), "--conditions", "magic"],
                ["arc", "eval", "--tasks", str(tasks), "--conditions", f"teacher:{tmp_path}@3"],
                ["arc", "synth", "--rule", "spiral", "--out", str(tmp_path)]):
        r = cli.invoke(app, [*bad, "-c", str(tiny_config_file)] if bad[1] != "synth" else bad)
        assert r.exit_code == 2, (bad, r.output)


def test_constrained_spec_sampling_is_always_valid_and_parses_back(runtime, tiny_cfg):
    from tasks.arc.tool_spec import sample_constrained, sample_specs

    st = runtime.student
    t = _task(n=3)
    s = tiny_cfg.arc.model_copy(update={"temperature": 1.0, "spec_max_new_tokens": 16, "max_tries": 2})
    with st.use(None) as m:
        got = sample_constrained(m, st.tokenizer, t, 4, s, seed=0)
        free = sample_specs(m, st.tokenizer, t, 2, s, seed=0)
    assert len(got) == 4 and all(g.spec is not None and g.tries == 1 and not g.invalid for g in got)
    assert all(parse_spec(g.raw) == g.spec for g in got)  # the text is the spec: RL can train on it
    assert len({g.spec.key() for g in got}) > 1  # sampled, not a fixed answer
    assert all(g.tries == 2 and len(g.invalid) == 2 for g in free if g.spec is None)  # the random tiny model
