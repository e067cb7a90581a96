"""The training loop: run directory, exact resume after a crash, clear errors on bad data."""

import numpy as np
import pytest

from modelrl.cli import main
from modelrl.runner.train import TrainConfig, TrainingError, train

from conftest import metrics_rows as rows

# A deliberately tiny MPC agent: the loop is under test here, not the learning.
TINY = {"model": "mlp", "hidden_size": 16, "num_layers": 2, "model_epochs": 2, "planner": "mppi", "horizon": 4,
        "num_samples": 32, "iterations": 1, "propagation": "mean", "particles": 1, "explore_steps": 100}


def tiny_config(steps=600):
    return TrainConfig("mpc", "Pendulum-v1", steps, seed=3, eval_every=200, eval_episodes=1)


def test_resume_after_crash_gives_the_same_metrics(crash_and_resume):
    full, a, before, b = crash_and_resume(tiny_config(), TINY, crash_at=450)
    assert before == ["200", "400"]
    assert [r["env_step"] for r in a] == ["200", "400", "600"]
    assert a == b
    assert {"eval_return", "eval_return_std", "model_holdout_mse"} <= set(a[0])
    assert (full / "config.yaml").exists() and (full / "checkpoints" / "latest.pt").exists()
    assert any((full / "tb").iterdir())


def test_non_finite_observation_stops_with_step_and_resumable_dir(tmp_path, monkeypatch):
    import modelrl.runner.train as loop

    real_make_env = loop.make_env

    def poisoned(env_id, seed=None, action_repeat=1):
        env = real_make_env(env_id, seed=seed, action_repeat=action_repeat)
        inner = env.unwrapped
        original = inner.step
        count = {"n": 0}

        def step(action):
            count["n"] += 1
            obs, r, te, tr, info = original(action)
            if count["n"] == 250:
                inner.state = np.array([np.nan, 0.0])  # the simulator blows up
                obs = inner._get_obs()
            return obs, r, te, tr, info

        inner.step = step
        return env

    monkeypatch.setattr(loop, "make_env", poisoned)
    with pytest.raises(TrainingError, match=r"env step 250.*resume"):
        train(tiny_config(), overrides=TINY, out=tmp_path / "nan", progress=False)
    assert [r["env_step"] for r in rows(tmp_path / "nan")] == ["200"]
    assert (tmp_path / "nan" / "checkpoints" / "latest.pt").exists()


def test_cli_train_and_errors(tmp_path, capsys):
    args = ["train", "mpc", "--env", "Pendulum-v1", "--steps", "200", "--eval-every", "200", "--eval-episodes", "1",
            "--out", str(tmp_path / "cli"), "--no-progress"]
    for k, v in TINY.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 0
    assert rows(tmp_path / "cli")[0]["env_step"] == "200"
    assert main(["train", "mpo"]) == 2
    out = capsys.readouterr().out
    assert "Did you mean" in out and "mpc" in out
    assert main(["train", "mpc", "--preset", "pet"]) == 2
    assert "pets" in capsys.readouterr().out
    assert main(["train", "mpc", "--hiden-size", "3"]) == 2
    assert "Unknown option '--hiden-size' for modelrl train mpc. Did you mean --hidden-size?" in \
        " ".join(capsys.readouterr().out.split())
    assert main(["train", "mpc", "--env", "Pendulm-v1", "--steps", "10", "--out", str(tmp_path / "x")]) == 2
    assert "Pendulum-v1" in capsys.readouterr().out


def test_diagnose_writes_errors_and_plot(tmp_path, capsys):
    run = tmp_path / "diag"
    trained = {**TINY, "hidden_size": 64, "model_epochs": 25}  # a model worth diagnosing
    train(TrainConfig("mpc", "Pendulum-v1", 200, seed=0, eval_every=200, eval_episodes=1), overrides=trained,
          out=run, progress=False)
    assert main(["diagnose", str(run), "--episodes", "2", "--k", "10"]) == 0
    assert "one-step MSE" in capsys.readouterr().out
    import json

    res = json.loads((run / "diagnostics.json").read_text())
    assert res["transitions"] == 400 and len(res["k_step_mse"]) == 10
    assert res["k_step_mse"][9] > res["k_step_mse"][0]  # open-loop error compounds
    assert res["one_step_normalized_mse"] < 1.0  # better than predicting the mean change
    assert (run / "plots" / "diagnostics.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "not a run directory" in " ".join(capsys.readouterr().out.split())  # rich wraps lines


def test_a_new_run_never_overwrites_a_run_directory(tmp_path, capsys):
    """Issue 15, case 1: `train --out RUN` on an existing run used to replace its config, checkpoint and
    metrics; now it is refused with the way out (--resume or another --out), and the run is untouched."""
    from modelrl.runner.rundir import RunDirError

    run = tmp_path / "run"
    cfg = tiny_config(400)
    train(cfg, overrides=TINY, out=run, progress=False)
    before = rows(run)
    config = (run / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="--resume"):
        train(tiny_config(200), overrides=TINY, out=run, progress=False)
    assert rows(run) == before and (run / "config.yaml").read_text() == config
    args = ["train", "mpc", "--env", "Pendulum-v1", "--steps", "200", "--out", str(run), "--no-progress"]
    assert main(args) == 2
    assert "is not empty" in " ".join(capsys.readouterr().out.split()) and rows(run) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="another --out"):
        train(cfg, overrides=TINY, out=other, progress=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty directory is fine
    train(tiny_config(200), overrides=TINY, out=empty, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train(tiny_config(0), overrides=TINY, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()  # a refused config leaves no directory behind


def test_a_run_directory_in_use_is_locked(tmp_path):
    """Issue 15, case 1: two processes on one --out used to mix their files; while a process holds the run
    directory's lock (released when it ends, crash or not), a second one is refused, new run or resume."""
    from modelrl.runner.rundir import RunDirError, RunLock

    run = tmp_path / "run"
    train(tiny_config(200), overrides=TINY, out=run, progress=False)
    with RunLock(run):  # as another process would hold it while training
        with pytest.raises(RunDirError, match="in use by process"):
            train(tiny_config(400), resume=run, progress=False)
        with pytest.raises(RunDirError, match="in use"):
            train(tiny_config(200), overrides=TINY, out=tmp_path / "run", progress=False)
    train(tiny_config(400), resume=run, progress=False)  # released: the resume goes ahead
    assert rows(run)[-1]["env_step"] == "200"  # the saved config's 200 steps: the run was already complete


def test_loop_settings_and_resume_mismatch_are_clear_errors(tmp_path, capsys):
    """Issue 15, case 6: --seed -1 and --checkpoint-every -7 were accepted or crashed; `train sac --resume`
    on an MPC run trained MPC without a word; an error with a value list in brackets lost it to rich markup."""
    with pytest.raises(ValueError, match="seed"):
        train(TrainConfig("mpc", "Pendulum-v1", 200, seed=-1), overrides=TINY, out=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(TrainConfig("mpc", "Pendulum-v1", 200, checkpoint_every=-7), overrides=TINY, out=tmp_path / "b",
              progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run = tmp_path / "run"
    train(tiny_config(200), overrides=TINY, out=run, progress=False)
    capsys.readouterr()
    assert main(["train", "sac", "--resume", str(run), "--no-progress"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "is a mpc run" in out and "modelrl train mpc --resume" in out
    from rich.console import Console

    from modelrl.cli import print_error

    console = Console(record=True, width=200)
    print_error(console, ValueError("noise std must be positive and finite, got [nan]"))
    assert "got [nan]" in console.export_text()


def test_tensorboard_after_resume_holds_every_evaluation_once(crash_and_resume):
    """Issue 15, case 4: the resume purged the evaluation logged at the checkpoint's step, which the resumed
    loop never logs again (TensorBoard showed 200 and 600, not 400)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    full, a, _, b = crash_and_resume(tiny_config(), TINY, crash_at=450)
    assert a == b
    crashed = full.parent / "crashed"
    acc = EventAccumulator(str(crashed / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("eval_return")]
    assert steps == [int(r["env_step"]) for r in b] == [200, 400, 600]


def test_resume_with_steps_extends_the_run_and_names_ignored_options(tmp_path, capsys):
    """Issue 15, case 6: --resume silently ignored --steps and every other option. --steps now extends the
    run (config.yaml records it), below the steps already trained it is refused, and the options the run's
    config decides are named as ignored."""
    import yaml

    run = tmp_path / "run"
    train(tiny_config(200), overrides=TINY, out=run, progress=False)
    with pytest.raises(ValueError, match="below the 200"):
        train(None, resume=run, progress=False, steps=100)
    capsys.readouterr()
    assert main(["train", "mpc", "--resume", str(run), "--steps", "400", "--horizon", "9", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ignored with --resume" in out and "--horizon" in out and "--steps" not in out.split("them):")[1]
    assert [r["env_step"] for r in rows(run)] == ["200", "400"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["steps"] == 400 and saved["agent"]["horizon"] == 4
