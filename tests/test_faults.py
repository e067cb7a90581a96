"""Runs never lose data, and every bad input gets a clear error (issue 15, the remaining cases).

Each test breaks one thing the way it breaks in practice and checks the outcome: refused with one
clear ``error:`` line (exit status 2 for bad input, 1 for a fault while running), or recovered with
nothing lost (the metrics rows of an uninterrupted run, checkpoints intact).

| case                                                   | outcome                                               |
|--------------------------------------------------------|-------------------------------------------------------|
| latest.pt empty, cut in half, bytes flipped, garbage   | recovered: falls back on latest.prev.pt, warns        |
| the same without a previous checkpoint (train, eval)   | error naming the file, status 1                       |
| a checkpoint from before checksums                     | recovered: loads; the next one is sealed              |
| disk full while checkpointing (ENOSPC; torch's error)  | error: MB needed and free, status 1; no .tmp; resumes |
| disk full while writing config.yaml                    | error; the old file intact, no .tmp                   |
| config.yaml / --config empty, cut short, invalid YAML  | error naming the file, status 2                       |
| --resume with metrics.csv rows but no checkpoint       | error, status 1; metrics.csv untouched                |
| metrics.csv whose last row is cut mid-row              | recovered: row dropped and logged again               |
| wrong types, NaN, unknown names in any config source   | error naming the field, status 2, no directory        |
| NaN reward / action / loss during training             | error: which, env step, cause, status 1               |
| next_obs of the wrong size; a reward given as an array | error naming next_obs / the reward's shape            |
| --env missing_module:Id                                | error: cannot import, PYTHONPATH, status 2            |
| plot --out DIR                                         | writes DIR/learning_curve.png, reports it             |
| buffer_capacity 1e12                                   | error: the memory it would need, status 2             |
| every subcommand; MODELRL_DEBUG=1; an unexpected error | one error line; the traceback only with the variable  |

The runs are tiny (SAC with 16 units on Pendulum-v1, action repeat 2: 200 env steps, 100 agent steps an episode), so the
module takes about half a minute.
"""
import errno
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from modelrl.cli import main
from modelrl.runner.train import TrainConfig, TrainingError, train

from conftest import Crash, _without_timing, metrics_rows

SAC = {"hidden_size": 16, "num_layers": 1, "batch_size": 32, "explore_steps": 50}


def config(steps: int = 600, **loop) -> TrainConfig:
    """Checkpoints and evaluations every 200 env steps (one episode); 600 env steps in all."""
    return TrainConfig("sac", "Pendulum-v1", steps, **{"seed": 0, "eval_every": 200, "eval_episodes": 1,
                                                       "action_repeat": 2, **loop})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``full``: 600 uninterrupted env steps. ``crashed``: the same run killed at env step 500, so it holds
    checkpoints/latest.pt (env step 400), latest.prev.pt (env step 200) and metrics rows 200 and 400."""
    root = tmp_path_factory.mktemp("faults")
    train(config(), overrides=SAC, out=root / "full", progress=False)

    def crash(step):
        if step == 500:
            raise Crash

    with pytest.raises(Crash):
        train(config(), overrides=SAC, out=root / "crashed", progress=False, on_step=crash)
    return root


@pytest.fixture
def crashed(runs, tmp_path):
    """A fresh copy of the crashed run for one test to break."""
    return Path(shutil.copytree(runs / "crashed", tmp_path / "run"))


def full_rows(runs) -> list[dict]:
    return _without_timing(metrics_rows(runs / "full"))


def one_error_line(capsys) -> str:
    """What a command printed, checked to be a single ``error:`` line (warnings aside)."""
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("warning:")]
    assert len(out) == 1 and out[0].startswith("error: "), out
    return out[0]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        data = b""
    elif how == "half":
        data = data[: len(data) // 2]
    elif how == "flipped":  # inside tensor data: torch.load reads such a file without a word
        data = data[:-3000] + bytes(b ^ 0xFF for b in data[-3000:-2900]) + data[-2900:]
    elif how == "garbage":
        data = b"not a checkpoint\n" * 64
    path.write_bytes(data)


# -- 1. checkpoint integrity ------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["empty", "half", "flipped", "garbage"])
def test_a_damaged_checkpoint_falls_back_on_the_previous_one(runs, crashed, how):
    damage(crashed / "checkpoints" / "latest.pt", how)
    with pytest.warns(UserWarning, match=r"latest\.pt .*(empty|cut short|corrupt|cannot be read).*previous checkpoint"):
        train(None, resume=crashed, progress=False)
    assert _without_timing(metrics_rows(crashed)) == full_rows(runs)  # nothing lost: 200, 400, 600 as uninterrupted
    assert (crashed / "checkpoints" / "latest.corrupt.pt").exists()  # set aside, not deleted


@pytest.mark.parametrize("how", ["empty", "half", "flipped", "garbage"])
def test_a_damaged_checkpoint_without_a_previous_one_is_one_clear_error(crashed, capsys, how):
    (crashed / "checkpoints" / "latest.prev.pt").unlink()
    damage(crashed / "checkpoints" / "latest.pt", how)
    before = (crashed / "metrics.csv").read_text()
    assert main(["train", "sac", "--resume", str(crashed), "--no-progress"]) == 1
    line = one_error_line(capsys)
    assert "latest.pt" in line and "no previous checkpoint" in line and "backup" in line
    assert main(["eval", str(crashed), "--episodes", "1"]) == 1
    assert "latest.pt" in one_error_line(capsys)
    assert (crashed / "metrics.csv").read_text() == before


def test_checkpoints_from_before_checksums_still_load_and_the_next_is_sealed(runs, crashed):
    import zipfile

    for name in ("latest.pt", "latest.prev.pt"):  # as the old save_checkpoint wrote them: plain torch.save
        path = crashed / "checkpoints" / name
        torch.save(torch.load(path, weights_only=False), path)
    train(None, resume=crashed, progress=False)
    assert _without_timing(metrics_rows(crashed)) == full_rows(runs)
    with zipfile.ZipFile(crashed / "checkpoints" / "latest.pt") as archive:
        assert any(n.endswith("/.modelrl_sha256") for n in archive.namelist())
    assert torch.load(crashed / "checkpoints" / "latest.pt", weights_only=False)["env_step"] == 600  # torch.load-able
    assert torch.load(crashed / "checkpoints" / "latest.prev.pt", weights_only=False)["env_step"] == 400


def test_with_an_action_repeat_every_step_count_is_in_env_steps(runs):
    """--steps, --eval-every and metrics.csv's env_step count environment steps; agent_step counts actions (each
    repeated action_repeat = 2 times here)."""
    rows = metrics_rows(runs / "full")
    assert [(r["env_step"], r["agent_step"]) for r in rows] == [("200", "100"), ("400", "200"), ("600", "300")]
    ckpt = torch.load(runs / "full" / "checkpoints" / "latest.pt", weights_only=False)
    assert (ckpt["env_step"], ckpt["step"]) == (600, 300)


def test_a_run_from_before_env_step_counting_resumes_in_the_new_units(runs, crashed):
    """A run written when metrics.csv and --steps counted agent steps (action repeat 2: steps 300, eval_every 100,
    rows 100 and 200, checkpoints without env_step) resumes to exactly the uninterrupted run of today."""
    saved = yaml.safe_load((crashed / "config.yaml").read_text())
    saved["train"].update(steps=300, eval_every=100)
    (crashed / "config.yaml").write_text(yaml.safe_dump(saved))
    rows = metrics_rows(crashed)
    header = [k for k in rows[0] if k != "agent_step"]
    lines = [",".join(header)] + [",".join(str(int(r[k]) // 2) if k == "env_step" else r[k] for k in header)
                                  for r in rows]
    (crashed / "metrics.csv").write_text("\n".join(lines) + "\n")
    for name in ("latest.pt", "latest.prev.pt"):
        path = crashed / "checkpoints" / name
        old = torch.load(path, weights_only=False)
        for key in ("next_eval", "next_ckpt"):
            old[key] //= 2
        del old["env_step"]
        torch.save(old, path)
    train(None, resume=crashed, progress=False)
    assert _without_timing(metrics_rows(crashed)) == full_rows(runs)
    assert yaml.safe_load((crashed / "config.yaml").read_text())["train"]["steps"] == 600


# -- 2. atomic writes, a full disk ------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["ENOSPC", "torch"])
def test_a_full_disk_is_named_and_loses_nothing(runs, tmp_path, monkeypatch, capsys, failure):
    """The second checkpoint (env step 400) hits a full disk halfway: one clear error with the sizes; the first
    checkpoint is intact, no temp file is left, and the run resumes to the uninterrupted metrics."""
    import modelrl.runner.rundir as rundir

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) != 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 4096)
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/7: file write failed")

    monkeypatch.setattr(torch, "save", save)
    if failure == "torch":  # torch's error has no errno: the free space decides
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage._replace(free=2048))
    run = tmp_path / "run"
    args = ["train", "sac", "--env", "Pendulum-v1", "--steps", "600", "--eval-every", "200", "--eval-episodes", "1",
            "--action-repeat", "2", "--out", str(run), "--no-progress"]
    for k, v in SAC.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 1
    line = one_error_line(capsys)
    assert "disk is full" in line and "latest.pt" in line and " MB" in line and "free at" in line
    assert f"--resume {run}" in line and "env step 200" in line
    assert not list(run.rglob("*.tmp"))
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["env_step"] == 200
    monkeypatch.undo()
    train(None, resume=run, progress=False)
    assert _without_timing(metrics_rows(run)) == full_rows(runs)


def test_a_full_disk_never_leaves_half_a_config_file(tmp_path, monkeypatch):
    import os

    from modelrl.runner.rundir import DiskFullError, save_config

    save_config(tmp_path, {"train": {"steps": 1}})
    before = (tmp_path / "config.yaml").read_text()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match="disk is full.*config.yaml"):
        save_config(tmp_path, {"train": {"steps": 2}})
    assert (tmp_path / "config.yaml").read_text() == before and not list(tmp_path.glob("*.tmp"))


# -- 3. corrupt or hand-edited files ----------------------------------------------------------------

BROKEN_YAML = {"empty": "", "cut": "train:\n  algo: sac\n  eval_ev", "invalid": "train: [\n  algo: sac\n"}


@pytest.mark.parametrize("how", list(BROKEN_YAML))
def test_a_broken_config_yaml_is_one_line_naming_it(crashed, capsys, how):
    text = (crashed / "config.yaml").read_text()
    cut = text[: text.index("buffer_capacity") + 6]  # cut short mid-key, as a full disk or a copy would
    (crashed / "config.yaml").write_text(cut if how == "cut" else BROKEN_YAML[how])
    for command in (["train", "sac", "--resume", str(crashed), "--no-progress"], ["eval", str(crashed)],
                    ["diagnose", str(crashed)], ["plot", str(crashed)]):
        assert main(command) == 2, command
        line = one_error_line(capsys)
        assert f"{crashed / 'config.yaml'}" in line and ("empty" in line or "not valid YAML" in line), line


@pytest.mark.parametrize("how", list(BROKEN_YAML))
def test_a_broken_config_file_is_one_line_naming_it(tmp_path, capsys, how):
    path = tmp_path / "my.yaml"
    path.write_text(BROKEN_YAML[how])
    assert main(["train", "sac", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and ("empty" in line or "not valid YAML" in line), line
    assert not (tmp_path / "run").exists()


def test_resume_with_metrics_but_no_checkpoint_is_refused(crashed, capsys):
    shutil.rmtree(crashed / "checkpoints")
    before = (crashed / "metrics.csv").read_text()
    assert main(["train", "sac", "--resume", str(crashed), "--no-progress"]) == 1
    line = one_error_line(capsys)
    assert "no checkpoint" in line and "metrics.csv holds 2 evaluation(s)" in line and "another --out" in line
    assert (crashed / "metrics.csv").read_text() == before  # not restarted over the old rows


def test_a_metrics_row_cut_short_is_dropped_and_logged_again(runs, crashed):
    text = (crashed / "metrics.csv").read_text()
    (crashed / "metrics.csv").write_text(text[: text.rindex("\n", 0, len(text) - 2) + 40])  # row 400 cut mid-row
    with pytest.warns(UserWarning, match="incomplete row"):
        train(None, resume=crashed, progress=False)
    rows = _without_timing(metrics_rows(crashed))
    assert rows == full_rows(runs)  # row 400 logged again from the previous checkpoint, none with blank cells
    assert all(all(v != "" for v in r.values()) for r in rows)


# -- 4. one validation for every config source ------------------------------------------------------

BAD_VALUES = [  # (field, value, the error's text); tyro itself refuses a word for an integer flag, or a misspelt flag
    ("hidden_size", "big", "hidden_size must be an integer, got 'big'", ("config", "api")),
    ("lr", "nan", "lr must be a finite number, got nan", ("flag", "config", "api")),
    ("steps", "ten", "steps must be an integer, got 'ten'", ("config", "api")),
    ("hiden_size", "16", "did you mean 'hidden_size'", ("config",)),  # the API said so already
]


@pytest.mark.parametrize("source, field, value, expected", [
    (source, field, value, expected) for field, value, expected, sources in BAD_VALUES for source in sources])
def test_every_config_source_refuses_bad_values_before_making_a_directory(tmp_path, capsys, source, field, value,
                                                                           expected):
    out = tmp_path / "run"
    typed = float(value) if value == "nan" else value
    if source == "api":
        loop, agent = ({"steps": typed}, {}) if field == "steps" else ({"steps": 10}, {field: typed})
        with pytest.raises(ValueError, match=expected):
            train(TrainConfig("sac", "Pendulum-v1", **loop), overrides={**SAC, **agent}, out=out, progress=False)
    else:
        if source == "flag":
            args = [f"--{field.replace('_', '-')}", value]
        else:
            path = tmp_path / "c.yaml"
            path.write_text(yaml.safe_dump({"train" if field == "steps" else "agent": {field: typed}}))
            args = ["--config", str(path)]
        assert main(["train", "sac", *args, "--out", str(out), "--no-progress"]) == 2
        assert expected in one_error_line(capsys)
    assert not out.exists()


def test_a_nan_temperature_is_refused_up_front(tmp_path, capsys):
    """`temperature: .nan` trained a whole MPC run on garbage weights of its samples; now no directory is made."""
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  temperature: .nan\n")
    assert main(["train", "mpc", "--config", str(path), "--steps", "10", "--out", str(tmp_path / "a")]) == 2
    assert "temperature must be a finite number, got nan" in one_error_line(capsys)
    assert main(["train", "mpc", "--temperature", "inf", "--steps", "10", "--out", str(tmp_path / "b")]) == 2
    assert "temperature" in one_error_line(capsys)
    from modelrl import make_env
    from modelrl.agents import make

    with pytest.raises(ValueError, match="temperature must be a finite number"):
        make("mpc", make_env("Pendulum-v1"), temperature=math.nan)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_hand_edited_config_yaml_is_checked_on_resume(crashed, capsys):
    saved = yaml.safe_load((crashed / "config.yaml").read_text())
    saved["train"]["steps"] = "ten"
    (crashed / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", "sac", "--resume", str(crashed), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(crashed / "config.yaml") in line and "steps must be an integer, got 'ten'" in line
    saved["train"]["steps"], saved["agent"]["gamma"] = 600, ".nan"
    (crashed / "config.yaml").write_text(yaml.safe_dump(saved).replace("'.nan'", ".nan"))
    assert main(["eval", str(crashed)]) == 2
    assert "gamma must be a finite number, got nan" in one_error_line(capsys)


def test_numbers_written_as_text_are_read(tmp_path):
    """YAML 1.1 reads 1e-3 as a string: coerced, not refused (and not a TypeError later)."""
    from modelrl.agents import agent_classes, build_config

    cfg = build_config(agent_classes("sac")[0], None, lr="1e-3", hidden_size=16.0, learn_alpha="false")
    assert cfg.lr == 1e-3 and cfg.hidden_size == 16 and type(cfg.hidden_size) is int and cfg.learn_alpha is False


# -- 5. finiteness at the loop's boundaries ---------------------------------------------------------

def poison_env(monkeypatch, at: int, change):
    """The training env (the first one made) passes its step ``at`` through ``change(obs, reward)``."""
    import modelrl.runner.train as loop

    real_make_env, made = loop.make_env, []

    def make(env_id, seed=None, action_repeat=1):
        env = real_make_env(env_id, seed=seed, action_repeat=action_repeat)
        made.append(env)
        if len(made) == 1:
            inner, original, count = env.unwrapped, env.unwrapped.step, [0]

            def step(action):
                count[0] += 1
                obs, r, te, tr, info = original(action)
                if count[0] == at:
                    obs, r = change(obs, r)
                return obs, r, te, tr, info

            inner.step = step
        return env

    monkeypatch.setattr(loop, "make_env", make)


def test_a_nan_reward_names_the_reward_the_step_and_the_env(tmp_path, monkeypatch, capsys):
    poison_env(monkeypatch, 300, lambda obs, r: (obs, float("nan")))  # the env's 300th step (agent step 150, repeat 2)
    run = tmp_path / "run"
    assert main(["train", "sac", "--steps", "600", "--eval-every", "200", "--eval-episodes", "1", "--out", str(run),
                 "--action-repeat", "2", "--no-progress", "--hidden-size", "16", "--num-layers", "1",
                 "--batch-size", "32"]) == 1
    line = one_error_line(capsys)
    assert "non-finite reward" in line and "env steps 299-300" in line and "environment Pendulum-v1 itself" in line
    assert f"--resume {run} continues from its last checkpoint (env step 200)" in line  # it helps once fixed


@pytest.mark.parametrize("what", ["action", "loss"])
def test_a_diverged_agent_names_what_went_nan_and_does_not_suggest_resume(tmp_path, monkeypatch, what):
    from modelrl.agents import agent_classes

    agent_cls = agent_classes("sac")[1]
    if what == "action":
        real_act = agent_cls.act
        monkeypatch.setattr(agent_cls, "act", lambda self, obs, deterministic=False: np.full(1, np.nan, np.float32)
                            if self.sac.updates >= 20 else real_act(self, obs, deterministic))
    else:
        real_update = agent_cls.update

        def update(self, buffer, step):
            out = real_update(self, buffer, step)
            return {**out, "critic_loss": torch.tensor(float("nan"))} if step == 80 else out

        monkeypatch.setattr(agent_cls, "update", update)
    with pytest.raises(TrainingError) as err:
        train(TrainConfig("sac", "Pendulum-v1", 150, eval_every=100, eval_episodes=1), overrides=SAC,
              out=tmp_path / "run", progress=False)
    text = str(err.value)
    assert f"non-finite {what}" in text and "diverging" in text and "Resuming would repeat" in text
    assert ("action at env step" if what == "action" else "critic_loss is nan after its update at env step 80") in text
    assert "--resume" not in text


def test_an_observation_of_the_wrong_size_names_next_obs_and_the_step(tmp_path, monkeypatch):
    poison_env(monkeypatch, 30, lambda obs, r: (np.append(obs, 0.0), r))
    with pytest.raises(TrainingError, match=r"next_obs of transition 30: the observation has 4 entries.*env step 30"):
        train(config(200, action_repeat=None), overrides=SAC, out=tmp_path / "run", progress=False)


def test_a_reward_given_as_an_array_is_a_clear_error(tmp_path, monkeypatch):
    poison_env(monkeypatch, 30, lambda obs, r: (obs, np.array([r, r])))
    with pytest.raises(TrainingError, match=r"reward of type ndarray of shape \(2,\).*one number.*env step 30"):
        train(config(200, action_repeat=None), overrides=SAC, out=tmp_path / "run", progress=False)


# -- 6. smaller ones --------------------------------------------------------------------------------

def test_an_env_module_that_cannot_be_imported(tmp_path, capsys):
    assert main(["train", "sac", "--env", "missing_module:Foo-v0", "--steps", "10", "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert "module 'missing_module' could not be imported" in line and "PYTHONPATH" in line
    assert not (tmp_path / "r").exists()


def test_plot_out_a_directory_writes_inside_it(runs, tmp_path, capsys):
    folder = tmp_path / "plots"
    folder.mkdir()
    assert main(["plot", str(runs / "full"), "--out", str(folder)]) == 0
    assert (folder / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert str(folder / "learning_curve.png") in capsys.readouterr().out
    assert main(["plot", str(runs / "full"), "--out", str(tmp_path / "curve")]) == 0  # no suffix: .png added, said
    assert (tmp_path / "curve.png").exists() and str(tmp_path / "curve.png") in capsys.readouterr().out


def test_a_huge_buffer_capacity_says_how_much_memory_it_needs(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  buffer_capacity: 1e12\n")  # YAML 1.1 reads this as the string '1e12'
    assert main(["train", "sac", "--config", str(path), "--steps", "10", "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert "buffer_capacity 1,000,000,000,000 would need" in line and "GB of memory" in line
    assert not (tmp_path / "r").exists()


# -- 7. the command line: one line, exit status, MODELRL_DEBUG ----------------------------------------

@pytest.mark.parametrize("argv, status", [
    (["plan", "mppi", "--opt", "momentum", "--no-save"], 2),
    (["plan", "mppi", "--env", "Pendulm-v1", "--no-save"], 2),
    (["eval", "{tmp}"], 2),
    (["diagnose", "{tmp}/nothing"], 2),
    (["plot", "{tmp}/nothing"], 2),
    (["sweep", "sac", "--grid", "hidden_size=big"], 2),
    (["sweep", "sac", "--set", "buffer_capacity=0"], 2),
    (["bench", "planers"], 2),
    (["train", "sac", "--resume", "{tmp}"], 2),
])
def test_every_command_reports_one_line_and_its_status(tmp_path, capsys, monkeypatch, argv, status):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == status
    one_error_line(capsys)
    monkeypatch.setenv("MODELRL_DEBUG", "1")
    assert main(argv) == status
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and captured.out.strip().startswith("error: ")


def test_an_unexpected_error_is_one_line_naming_its_type(monkeypatch, capsys):
    import modelrl.runner.plan as plan

    def broken(*args, **kwargs):
        raise KeyError("horizon")

    monkeypatch.setattr(plan, "run_plan", broken)
    assert main(["plan", "mppi", "--no-save"]) == 1
    line = one_error_line(capsys)
    assert "KeyError" in line and "MODELRL_DEBUG=1" in line
