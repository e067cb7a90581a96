"""`modelrl sweep`: parsing of the search space, and 2 seeds x 2 settings of mpc through a local Ray."""
import csv
import json

import pytest

from modelrl.runner.sweep import SweepError, draw_random, parse_grid, parse_random, parse_seeds, summarize


def test_parse_search_space():
    assert parse_grid(["horizon=4,8", "planner=cem,mppi", "model_lr=1e-3,0.01", "learn-reward=true"]) == {
        "horizon": [4, 8], "planner": ["cem", "mppi"], "model_lr": [1e-3, 0.01], "learn_reward": [True]}
    assert parse_random(["model_lr=1e-4:1e-2:log", "horizon=5:30"]) == {
        "model_lr": (1e-4, 1e-2, True), "horizon": (5, 30, False)}
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    for bad in (["horizon"], ["horizon="]):
        with pytest.raises(SweepError):
            parse_grid(bad)
    for bad in (["lr=1:0"], ["lr=0:1:exp"], ["lr=0:1:log"], ["lr=a:b"]):
        with pytest.raises(SweepError):
            parse_random(bad)


def test_random_draws_are_seeded_and_typed():
    space = {"horizon": (5, 30, False), "model_lr": (1e-4, 1e-2, True), "temperature": (0.1, 1.0, False)}
    a, b = draw_random(space, 4, seed=1), draw_random(space, 4, seed=1)
    assert a == b and len(a) == 4
    for point in a:
        assert isinstance(point["horizon"], int) and 5 <= point["horizon"] <= 30
        assert 1e-4 <= point["model_lr"] <= 1e-2 and 0.1 <= point["temperature"] <= 1.0


def test_summarize_means_over_seeds_best_first():
    rows = [{"horizon": 4, "seed": 0, "eval_return": -10.0}, {"horizon": 4, "seed": 1, "eval_return": -20.0},
            {"horizon": 8, "seed": 0, "eval_return": -5.0}, {"horizon": 8, "seed": 1, "eval_return": -7.0}]
    summary = summarize(rows, ["horizon"])
    assert [s["horizon"] for s in summary] == [8, 4]
    assert summary[1]["mean_return"] == -15.0 and summary[1]["std_return"] == 5.0 and summary[1]["seeds"] == 2


@pytest.mark.slow
def test_sweep_two_settings_two_seeds_on_local_ray(tmp_path, capsys):
    """The acceptance check of the sweep: 2 seeds x 2 horizons of a tiny mpc, trials in parallel on local Ray."""
    pytest.importorskip("ray.tune")
    from modelrl.cli import main

    out = tmp_path / "sweep"
    rc = main(["sweep", "mpc", "--env", "Pendulum-v1", "--steps", "30", "--preset", "v1.5",
               "--grid", "horizon=4,8", "--seeds", "0,1", "--eval-every", "30", "--eval-episodes", "1",
               "--set", "explore_steps=20", "hidden_size=16", "num_layers=2", "model_epochs=2", "num_samples=32",
               "--num-cpus", "2", "--out", str(out)])
    assert rc == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "mean return" in printed and "sweep.csv" in printed
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert sorted((r["horizon"], r["seed"]) for r in rows) == [("4", "0"), ("4", "1"), ("8", "0"), ("8", "1")]
    assert all(r["env_step"] == "30" and float(r["eval_return"]) < 0 for r in rows)
    for r in rows:  # every trial is a full run directory with the fixed and varied fields applied
        import yaml

        saved = yaml.safe_load(open(f"{r['run_dir']}/config.yaml"))
        assert saved["agent"]["horizon"] == int(r["horizon"]) and saved["agent"]["hidden_size"] == 16
        assert saved["train"]["seed"] == int(r["seed"]) and saved["train"]["preset"] == "v1.5"
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["summary"]) == 2 and summary["failed_trials"] == []
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
