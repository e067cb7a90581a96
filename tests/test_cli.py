"""`modelrl plan`: happy path (run directory contents) and its main error messages."""
import csv
import json

import pytest
import yaml

from modelrl.cli import main


def test_plan_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["plan", "mppi", "--env", "Pendulum-v1", "--episodes", "2", "--max-steps", "20",
               "--num-samples", "64", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "ms/action" in printed
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["episode"] for r in rows] == ["0", "1"]
    assert {"env_step", "wall_s", "eval_return", "ms_per_action"} <= set(rows[0])
    assert rows[1]["env_step"] == "40"
    config = yaml.safe_load(open(out / "config.yaml"))
    assert config["planner"] == "mppi" and config["planner_kwargs"]["num_samples"] == 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_return"] == pytest.approx(sum(float(r["eval_return"]) for r in rows) / 2)
    png = (out / "plots" / "returns.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not (out / "checkpoints").exists()  # planning has nothing to resume


def test_plan_opt_passes_any_keyword(tmp_path):
    rc = main(["plan", "cem", "--episodes", "1", "--max-steps", "5", "--num-samples", "40", "--num-elites", "5",
               "--opt", "momentum=0.2", "noise_beta=2.0", "--no-save"])
    assert rc == 0


def test_plan_unknown_planner_lists_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "mppo", "--episodes", "1"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "mppi" in err


def test_plan_unknown_env_suggests_close_match(capsys):
    assert main(["plan", "mppi", "--env", "Pendulm-v1", "--no-save"]) == 2
    assert "Pendulum-v1" in capsys.readouterr().out


def test_plan_env_without_known_model(capsys):
    assert main(["plan", "mppi", "--env", "HalfCheetah-v5", "--no-save"]) == 2
    assert "No true dynamics" in capsys.readouterr().out


def test_plan_wrong_keyword_for_planner(capsys):
    assert main(["plan", "cem", "--temperature", "0.5", "--no-save", "--episodes", "1"]) == 2
    assert "temperature" in capsys.readouterr().out


def test_plan_bad_values(capsys):
    assert main(["plan", "mppi", "--horizon", "0", "--no-save"]) == 2
    assert "horizon" in capsys.readouterr().out
    assert main(["plan", "mppi", "--episodes", "0", "--no-save"]) == 2
    assert "episodes" in capsys.readouterr().out


# ---- train --config, eval, plot, sweep, bench: one tiny trained setting (two seeds) shared by the tests below

from modelrl.runner.train import TrainConfig, train  # noqa: E402

TINY = {"model": "mlp", "hidden_size": 16, "num_layers": 2, "model_epochs": 2, "planner": "mppi", "horizon": 4,
        "num_samples": 32, "iterations": 1, "propagation": "mean", "particles": 1, "explore_steps": 100}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/mpc/seed0, runs/mpc/seed1 (one setting) and runs/mpc16/seed0 (num_samples=16): 400 steps each."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed, extra in (("mpc", 0, {}), ("mpc", 1, {}), ("mpc16", 0, {"num_samples": 16})):
        train(TrainConfig("mpc", "Pendulum-v1", 400, seed=seed, eval_every=200, eval_episodes=1),
              overrides={**TINY, **extra}, out=root / name / f"seed{seed}", progress=False)
    return root


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "plan", "plot", "diagnose", "sweep", "bench"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "Algorithms: mpc" in capsys.readouterr().out


def test_train_writes_learning_curve(runs):
    png = (runs / "mpc" / "seed0" / "plots" / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_train_from_config_file_with_overrides(runs, tmp_path):
    saved = runs / "mpc" / "seed0" / "config.yaml"
    out = tmp_path / "again"
    assert main(["train", "--config", str(saved), "--seed", "5", "--steps", "200", "--hidden-size", "24",
                 "--out", str(out), "--no-progress"]) == 0
    new = yaml.safe_load((out / "config.yaml").read_text())
    old = yaml.safe_load(saved.read_text())
    assert new["train"]["seed"] == 5 and new["train"]["steps"] == 200
    assert new["train"]["eval_every"] == old["train"]["eval_every"] == 200  # from the file
    assert new["agent"]["hidden_size"] == 24  # the flag wins over the file
    assert {k: v for k, v in new["agent"].items() if k != "hidden_size"} == \
           {k: v for k, v in old["agent"].items() if k != "hidden_size"}


def test_train_config_file_errors(runs, tmp_path, capsys):
    def write(name, data):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return str(path)

    assert main(["train", "mpc", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no config file" in capsys.readouterr().out
    assert main(["train", "mpc", "--config", write("a.yaml", {"agent": {"hiden_size": 3}})]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "hiden_size" in out and "did you mean 'hidden_size'" in out and "Valid fields" in out
    assert main(["train", "mpc", "--config", write("t.yaml", {"train": {"stepz": 3}})]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "stepz" in out and "eval_every" in out
    assert main(["train", "mpc", "--config", write("s.yaml", {"trian": {}})]) == 2
    assert "train: and agent:" in capsys.readouterr().out
    assert main(["train", "mpc", "--config", write("o.yaml", {"train": {"algo": "sac"}})]) == 2
    assert "'sac'" in capsys.readouterr().out
    assert main(["train", "--config", write("n.yaml", {"agent": {}})]) == 2
    assert "names no algorithm" in " ".join(capsys.readouterr().out.split())


def test_eval_prints_returns_and_writes_video(runs, capsys):
    import imageio.v2 as imageio

    run = runs / "mpc" / "seed0"
    assert main(["eval", str(run), "--episodes", "2", "--max-steps", "30", "--video", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "episode_0.mp4" in out
    res = json.loads((run / "eval.json").read_text())
    assert res["reset_seeds"] == [7, 8] and res["lengths"] == [30, 30] and len(res["returns"]) == 2
    frames = imageio.mimread(run / "videos" / "episode_0.mp4")
    assert len(frames) == 31 and frames[0].shape == (500, 500, 3)
    frame = imageio.imread(run / "videos" / "episode_0_frame.png")
    assert frame.std() > 5  # a drawn pendulum, not a blank image
    assert len(imageio.mimread(run / "videos" / "episode_0.gif")) >= 16
    assert not (run / "videos" / "episode_1.mp4").exists()  # --video-episodes 1 by default


def test_eval_errors(runs, tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in " ".join(capsys.readouterr().out.split())
    plan_run = tmp_path / "plan"
    assert main(["plan", "mppi", "--episodes", "1", "--max-steps", "5", "--num-samples", "16", "--out",
                 str(plan_run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(plan_run)]) == 2
    assert "not a training run" in " ".join(capsys.readouterr().out.split())
    assert main(["eval", str(runs / "mpc" / "seed0"), "--episodes", "0"]) == 2
    assert "episodes" in capsys.readouterr().out


def test_plot_groups_seeds_and_compares_settings(runs, tmp_path, capsys):
    from modelrl.runner.plots import find_runs, group_runs, load_run

    groups = group_runs([load_run(p) for p in find_runs([runs])])
    assert sorted((label, len(members)) for label, members in groups) == [
        ("mpc on Pendulum-v1: num_samples=16", 1), ("mpc on Pendulum-v1: num_samples=32", 2)]
    assert main(["plot", str(runs / "mpc"), str(runs / "mpc16" / "seed0"), "--out", str(tmp_path / "cmp.png")]) == 0
    assert "cmp.png" in capsys.readouterr().out
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(runs), "--x", "wall", "--band", "std"]) == 0
    assert (runs / "learning_curves.png").exists()


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().out
    assert main(["plot", str(tmp_path)]) == 2
    assert "holds no training run" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path), "--x", "time"])
    assert "steps" in capsys.readouterr().err


def test_sweep_errors_name_the_valid_choices(capsys):
    out = lambda: " ".join(capsys.readouterr().out.split())  # noqa: E731 (rich wraps long lines)
    assert main(["sweep", "mpc", "--grid", "hiden_size=8,16", "--steps", "10"]) == 2
    text = out()
    assert "did you mean 'hidden_size'" in text and "Valid fields" in text
    assert main(["sweep", "mpcc", "--grid", "horizon=4"]) == 2
    assert "Did you mean mpc" in out()
    assert main(["sweep", "mpc", "--grid", "horizon"]) == 2
    assert "FIELD=V1,V2" in out()
    assert main(["sweep", "mpc", "--random", "model_lr=1e-2:1e-4"]) == 2
    assert "LOW < HIGH" in out()
    assert main(["sweep", "mpc", "--seeds", "a,b"]) == 2
    assert "--seeds" in out()
    assert main(["sweep", "mpc", "--env", "Pendulm-v1", "--grid", "horizon=4"]) == 2
    assert "Pendulum-v1" in out()


def test_bench_lists_and_runs_scripts(capsys):
    assert main(["bench", "list"]) == 0
    assert "planners" in capsys.readouterr().out
    assert main(["bench", "planers"]) == 2
    assert "Did you mean planners" in capsys.readouterr().out
    assert main(["bench", "planners", "--help"]) == 0  # runs python -m benchmarks.planners --help


def test_train_ends_with_the_table_of_evaluations(runs):
    """`modelrl train` prints the learning curve as a table (make demo shows the return going from random to
    solved): one row per evaluation, in the order of metrics.csv."""
    from rich.console import Console

    from modelrl.cli import evaluation_table

    console = Console(record=True, width=120)
    console.print(evaluation_table(runs / "mpc" / "seed0", 1))
    text = console.export_text()
    rows = list(csv.DictReader(open(runs / "mpc" / "seed0" / "metrics.csv")))
    assert "evaluations (1 episodes each)" in text and len(rows) == 2
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.count("│") > 2]
    lines = [line for line in cells if line[0].isdigit()]
    assert [line[0] for line in lines] == ["200", "400"]
    for line, row in zip(lines, rows):
        assert line[1] == f"{float(row['eval_return']):.1f}"
