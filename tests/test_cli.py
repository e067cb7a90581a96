"""`modelrl plan`: happy path (run directory contents) and its main error messages."""
import csv
import json
import re

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


def test_plan_unknown_planner_suggests_and_lists_choices(capsys):
    """The planner's name is refused in the CLI's one error form, with the closest names and every valid one."""
    assert main(["plan", "mpi", "--episodes", "1"]) == 2
    assert capsys.readouterr().out.split() == (
        "error: Unknown planner 'mpi'. Did you mean mppi? Choose from: mppi, cem, icem, random_shooting, ilqr, "
        "lqr.").split()


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


def one_line(capsys) -> str:
    """What the command printed, its line breaks (rich wraps long lines) folded."""
    return " ".join(capsys.readouterr().out.split())


def test_plan_opt_keys_and_values_checked_against_the_planners_settings(capsys):
    assert main(["plan", "mppi", "--opt", "momentun=0.2", "--no-save"]) == 2
    out = one_line(capsys)
    assert "Unknown field(s) 'momentun' (did you mean 'momentum'?) for planner mppi. Valid fields: compile," in out
    assert "temperature" in out and "noise_sigma" in out
    assert main(["plan", "cem", "--opt", "noise_beta=loud", "--no-save"]) == 2
    assert one_line(capsys) == "error: noise_beta must be a finite number, got 'loud'"
    assert main(["plan", "ilqr", "--opt", "iterations=2.5", "--no-save"]) == 2
    assert one_line(capsys) == "error: iterations must be an integer, got 2.5"


def test_a_mistyped_option_or_command_gets_one_error_form_in_every_command(tmp_path, capsys):
    """tyro's own box said 'Unrecognized options' (suggesting the flags of every command) and `modelrl plan mpi`
    'invalid choice'; now each is one error line with the closest names, status 2, whatever the command."""
    cases = [
        (["plan", "mppi", "--horizn", "3"], "Unknown option '--horizn' for modelrl plan. Did you mean --horizon?"),
        (["eval", str(tmp_path), "--episods", "3"], "Unknown option '--episods' for modelrl eval. Did you mean "
                                                     "--episodes"),
        (["plot", str(tmp_path), "--bnd", "std"], "Unknown option '--bnd' for modelrl plot. Did you mean --band?"),
        (["diagnose", str(tmp_path), "--sed", "1"], "Unknown option '--sed' for modelrl diagnose. Did you mean "
                                                     "--seed?"),
        (["sweep", "mpc", "--gird", "horizon=4"], "Unknown option '--gird' for modelrl sweep. Did you mean --grid?"),
        (["train", "mpc", "--horizn", "3"], "Unknown option '--horizn' for modelrl train mpc. Did you mean "
                                            "--horizon?"),
        (["train", "mpc", "--planner", "mpi"], "Unknown value 'mpi' for --planner. Did you mean mppi? Choose from: "
                                               "cem, icem, mppi, random_shooting, ilqr."),
        (["pln", "mppi"], "Unknown command 'pln'. Did you mean plan, plot? Choose from: train, eval, plan,"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        out = one_line(capsys)
        assert out.startswith("error: ") and expected in out, (argv, out)
    assert main(["plan", "mppi", "--max_steps", "2", "--episodes", "1", "--num-samples", "8", "--no-save"]) == 0


def test_help_lists_choices_and_describes_flags_without_double_negatives(capsys, monkeypatch):
    import typing

    from modelrl.cli import PlannerName
    from modelrl.planners import PLANNERS

    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    assert set(typing.get_args(PlannerName)) == set(PLANNERS)

    def help_text(argv):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--help"])
        assert exc.value.code == 0
        return capsys.readouterr().out

    plan_help = help_text(["plan"])
    assert "{mppi,cem,icem,random_shooting,ilqr,lqr}" in plan_help
    assert "lqr needs an env whose true model is linear (LinearDynamics); no built-in env has one" in plan_help
    assert "--seed INT" in plan_help and "Seed of the planner's random draws" in plan_help
    assert "Pendulum-v1, CartPoleSwingUp-v0" in plan_help and "(default: Pendulum-v1)" in plan_help
    assert "--no-save" in plan_help and "--no-no-save" not in plan_help
    train_help = help_text(["train", "mpc"])
    assert "--no-progress" in train_help and "--no-no-progress" not in train_help
    assert "Seed of the agent" in train_help
    for field, choices in (("planner", "{cem,icem,mppi,random_shooting,ilqr}"), ("model", "{ensemble,mlp}"),
                           ("propagation", "{ts_inf,ts1,mean}")):
        assert f"--{field} {choices}" in train_help
    assert "usage: modelrl plot [-h] [OPTIONS] RUN..." in help_text(["plot"])
    diagnose_help = help_text(["diagnose"])
    assert "RUN" in diagnose_help and "Seed of the fresh episodes" in diagnose_help


def test_plan_with_a_model_that_breaks_the_contract_is_one_line_naming_it(capsys, monkeypatch):
    """A user's true model (register_true_dynamics) returning a reward [B, 1] or numpy arrays: bad input (status 2),
    one line naming the model class, the shapes it was given, what it returned and what was expected."""
    import torch

    import modelrl.runner.plan as plan_module

    class ColumnReward:
        state_dim = 3

        def step(self, s, a):
            return s, -(a**2)

    class NumpyModel(ColumnReward):
        def step(self, s, a):
            return s.numpy(), torch.zeros(s.shape[0])

    for model, expected in ((ColumnReward, "error: ColumnReward.step(state[64, 3], action[64, 1]) returned a reward "
                                           "of shape [64, 1]; expected [64] (one reward per row: reward.squeeze(-1) "
                                           "drops the last dimension)"),
                            (NumpyModel, "error: NumpyModel.step(state[64, 3], action[64, 1]) returned a next_state "
                                         "of type numpy.ndarray of shape [64, 3]; expected a torch.Tensor [64, 3]")):
        monkeypatch.setattr(plan_module, "true_dynamics", lambda env_id, model=model: model())
        assert main(["plan", "mppi", "--num-samples", "64", "--episodes", "1", "--max-steps", "1", "--no-save"]) == 2
        assert expected in one_line(capsys)


def test_plan_lqr_refused_where_the_env_has_no_linear_model(capsys):
    assert main(["plan", "lqr", "--env", "CartPoleSwingUp-v0", "--no-save"]) == 2
    out = one_line(capsys)
    assert "lqr needs an env whose true model is linear" in out and \
        "CartPoleSwingUp-v0's model CartPoleSwingUpDynamics is not, nor is any built-in env's: use ilqr" in out


def test_plan_reports_the_compile_warm_up_apart_from_ms_per_action(tmp_path, capsys, monkeypatch):
    """With --opt compile=true the first action compiles the rollout; it is timed apart (the table's caption,
    summary.json's compile_s) and left out of ms/action. A stand-in for torch.compile takes 0.5 s on its first call."""
    import time

    import modelrl.planners.base as base

    def slow_first_call(fn, enabled=True):
        calls = []

        def call(*args, **kwargs):
            if not calls:
                time.sleep(0.5)
            calls.append(1)
            return fn(*args, **kwargs)

        return call if enabled else fn

    monkeypatch.setattr(base, "compiled", slow_first_call)
    out = tmp_path / "run"
    assert main(["plan", "mppi", "--episodes", "2", "--max-steps", "4", "--num-samples", "16", "--opt",
                 "compile=true", "--out", str(out)]) == 0
    assert re.search(r"compile \(warm-up\): \d+\.\d s, the first action's planning time", one_line(capsys))
    summary = json.loads((out / "summary.json").read_text())
    assert 0.5 <= summary["compile_s"] < 5
    ms = [float(r["ms_per_action"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert max(ms) < 100 and summary["ms_per_action"] < 100  # 0.5 s in 4 actions would be 125 ms each
    assert main(["plan", "mppi", "--episodes", "1", "--max-steps", "2", "--num-samples", "8", "--out",
                 str(tmp_path / "eager")]) == 0
    assert "warm-up" not in one_line(capsys)
    assert json.loads((tmp_path / "eager" / "summary.json").read_text())["compile_s"] is None


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
    assert main(["plot", str(tmp_path), "--x", "time"]) == 2
    assert "Unknown value 'time' for --x. Did you mean steps? Choose from: both, steps, wall." in \
        " ".join(capsys.readouterr().out.split())


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
