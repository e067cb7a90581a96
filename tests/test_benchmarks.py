"""Benchmark bookkeeping that decides what a results table claims (the benchmarks themselves run in benchmarks/)."""
import pytest
import yaml

from benchmarks import common, utd


def fake_run(path, agent: dict):
    """A `modelrl train` run directory with two evaluation rows (no training needed to record it)."""
    path.mkdir()
    train = {"algo": "mbpo", "env": "Pendulum-v1", "seed": 0, "preset": None, "eval_episodes": 10}
    (path / "config.yaml").write_text(yaml.safe_dump({"train": train, "agent": agent}))
    (path / "metrics.csv").write_text("env_step,eval_return,eval_return_std,train_wall_s,train_cpu_s\n"
                                      "500,-900,10,5,5\n1000,-300,10,10,10\n")
    return path


def test_utd_records_a_run_under_the_defaults_only_if_it_used_them(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    # G is what the study varies; resolved fields as config.yaml now holds them (a list for a tuple) are defaults
    plain = fake_run(tmp_path / "plain", {"utd": 5, "explore_steps": 1000, "rollout_epochs": [1, 15]})
    data = utd.record(plain, None)
    assert [(r["algo"], r["utd"], r.get("variant"), r["curve"]["return"]) for r in data["runs"]] == [
        ("mbpo", 5, None, [-900.0, -300.0])]
    changed = fake_run(tmp_path / "changed", {"explore_steps": 123, "critic_layernorm": True})
    with pytest.raises(ValueError, match="critic_layernorm, explore_steps"):
        utd.record(changed, None)
    data = utd.record(changed, "LayerNorm, 123 random steps")
    assert [r.get("variant") for r in data["runs"]] == [None, "LayerNorm, 123 random steps"]


def test_official_tdmpc2_results_are_drawn_at_the_env_steps_they_stand_for():
    """The official TD-MPC2 trainer counts actions at action repeat 2: its step 100k is 200k env steps."""
    from benchmarks.tdmpc_learning import official_tdmpc2

    got = official_tdmpc2("dmc:pendulum-swingup")
    assert got["100000"]["env_step"] == 200_000
    assert sorted(got["100000"]["returns"]) == [563.7, 756.0, 852.2]  # results/tdmpc2/pendulum-swingup.csv
    assert round(got["100000"]["mean"]) == 724
    assert official_tdmpc2("Pendulum-v1") == {} and official_tdmpc2("dmc:walker-walk") == {}


def test_our_tdmpc_curves_come_from_the_dmc_table_or_from_a_named_run_of_the_same_task(tmp_path, monkeypatch):
    """TD-MPC2's plot and table show our TD-MPC from the DMC table, or from runs continued past it (named)."""
    import json

    from benchmarks import tdmpc_learning

    monkeypatch.setattr(tdmpc_learning, "RESULTS", tmp_path)
    seeds = [{"seed": 0, "curve": [{"env_step": 200_000, "eval_return": 790.0}]}]
    (tmp_path / "tdmpc_dmc.json").write_text(json.dumps({"tasks": [{"task": "pendulum-swingup", "seeds": seeds[:0]},
                                                                   {"task": "walker-walk", "seeds": seeds}]}))
    (tmp_path / "longer.json").write_text(json.dumps({"env": "dmc:pendulum-swingup", "seeds": seeds}))
    assert tdmpc_learning.our_tdmpc_curves("dmc:walker-walk") == seeds
    assert tdmpc_learning.our_tdmpc_curves("dmc:pendulum-swingup") == []
    assert tdmpc_learning.our_tdmpc_curves("dmc:pendulum-swingup", "longer") == seeds
    assert tdmpc_learning.our_tdmpc_curves("dmc:cartpole-swingup", "longer") == []  # another task's runs
    assert tdmpc_learning.our_tdmpc_curves("dmc:pendulum-swingup", "missing") == []


def test_collect_leaves_out_seeds_without_an_evaluation_and_counts_env_steps(tmp_path, capsys):
    """``--collect-only`` on runs still going: a seed not started, or with only the header, is left out."""
    from benchmarks.tdmpc_learning import collect

    header = "env_step,agent_step,wall_s,train_wall_s,train_cpu_s,eval_return,eval_return_std\n"
    done, empty, missing = tmp_path / "seed0", tmp_path / "seed1", tmp_path / "seed2"
    done.mkdir()
    empty.mkdir()
    (done / "metrics.csv").write_text(header + "1000,500,9,8,7,300,5\n2000,1000,19,16,14,850,4\n")
    (empty / "metrics.csv").write_text(header)
    rows = collect({0: done, 1: empty, 2: missing}, repeat=2, target=800.0)
    assert [r["seed"] for r in rows] == [0]
    assert (rows[0]["final_env_step"], rows[0]["final_return"], rows[0]["first_env_step_at_target"]) == (
        2000, 850.0, 2000)
    assert rows[0]["train_cpu_s"] == 14.0
    out = capsys.readouterr().out
    assert "seed 1: no evaluation yet" in out and "seed 2: no evaluation yet" in out


def test_speed_probe_runs_on_the_code_before_issue_16_and_on_this_tree(tmp_path):
    """``benchmarks.baseline_speed`` times one probe file on two code trees; it must keep working on both."""
    import subprocess

    from benchmarks import baseline_speed

    try:
        old = baseline_speed.unpack(baseline_speed.BASELINE, tmp_path)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("no git, or a clone without the baseline commit (shallow)")
    assert "lockstep" not in (old / "modelrl" / "runner" / "train.py").read_text()  # the old evaluation loop
    got_old = baseline_speed.probe(old, "tdmpc-step", "--repeats", "2")
    got_new = baseline_speed.probe(common.ROOT, "tdmpc-step", "--repeats", "2", "--eager")
    for got in (got_old, got_new):
        assert got["plan_ms"] > 0 and got["update_ms"] > 0 and got["compile"] is False


def test_speed_floor_counts_matmul_work_forward_and_backward():
    """The floor's FLOP count: 2 m k n for a matmul, and twice that again for its two gradients."""
    import torch

    from benchmarks.speed_floor import flops

    a, b = torch.randn(8, 16, requires_grad=True), torch.randn(16, 4)
    assert flops(lambda: a @ b) == 2 * 8 * 16 * 4
    assert flops(lambda: (a @ b.requires_grad_()).sum().backward()) == 3 * 2 * 8 * 16 * 4
