"""`modelrl sweep`: parsing of the search space, every sweepable field, 2 seeds x 2 settings of mpc through a local
Ray, and an interrupted and resumed sweep on a two-node Ray cluster started by the test."""
import csv
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from modelrl.runner.sweep import (
    _LOOP_FIELDS,
    SweepError,
    draw_random,
    parse_grid,
    parse_random,
    parse_seeds,
    run_sweep,
    summarize,
    trial_settings,
)


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


def test_key_value_options_have_one_parser():
    """plan --opt, --expert-opts and sweep --set/--grid read KEY=VALUE the same way (runner.options)."""
    from modelrl.runner.experts import parse_opts
    from modelrl.runner.options import parse_assignments

    expected = {"horizon": 20, "model_lr": 1e-3, "compile": True, "planner": "cem", "noise_sigma": [0.5, 0.2]}
    items = ["horizon=20", "model-lr=1e-3", "compile=true", "planner=cem", "noise_sigma=[0.5, 0.2]"]
    assert parse_assignments(items, "--opt") == parse_opts(items) == expected
    assert {k: v[0] for k, v in parse_grid(items[:4]).items()} == {k: expected[k] for k in list(expected)[:4]}
    for bad in ("horizon", "=3"):
        with pytest.raises(ValueError, match="--opt takes KEY=VALUE"):
            parse_assignments([bad], "--opt")


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


@pytest.mark.parametrize("algo", ["mpc", "tdmpc", "tdmpc2", "sac", "mbpo", "bc", "dagger"])
def test_every_sweepable_field_reaches_the_trial(algo):
    """Each field a sweep may vary (the algorithm's config and the loop's), set by --grid or by --set, reaches the
    trial's TrainConfig or agent overrides, and a swept loop field replaces the sweep's own value (the bug:
    `--grid eval_every=...` failed every trial with "got multiple values for keyword argument")."""
    from modelrl.agents import agent_classes, build_config
    from modelrl.runner.train import check_train_config

    config_cls, _ = agent_classes(algo)
    defaults = dataclasses.asdict(build_config(config_cls))
    loop_values = {"eval_every": 500, "eval_episodes": 3, "checkpoint_every": 250, "buffer_capacity": 5000,
                   "action_repeat": 2}
    assert set(loop_values) == set(_LOOP_FIELDS)
    base = {"algo": algo, "env": "Pendulum-v1", "steps": 1000, "preset": None, "eval_every": 1000,
            "eval_episodes": 10, "fixed": {}}
    for name, value in [*defaults.items(), *loop_values.items()]:
        for config, fixed in (({name: value, "seed": 3}, {}), ({"seed": 3}, {name: value})):
            cfg, agent = trial_settings(config, {**base, "fixed": fixed})
            assert cfg.seed == 3 and cfg.algo == algo
            if name in _LOOP_FIELDS:
                assert getattr(cfg, name) == value and agent == {}
            else:
                assert agent == {name: value} and cfg.eval_every == 1000
            check_train_config(dataclasses.asdict(cfg))
            build_config(config_cls, None, **agent)


def test_sweep_directory_is_never_reused_and_resume_needs_one(tmp_path):
    pytest.importorskip("ray.tune")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sweep.yaml").write_text("algo: mpc\n")
    with pytest.raises(SweepError, match="already holds a sweep: continue it with --resume"):
        run_sweep("mpc", "Pendulum-v1", 10, out=tmp_path / "old")
    with pytest.raises(SweepError, match="not a sweep directory"):
        run_sweep(resume=tmp_path / "nothing")
    from modelrl.cli import main

    assert main(["sweep", "mpc", "--resume", str(tmp_path / "old")]) == 2  # ALGO with --resume: refused


def test_storage_check_names_the_nodes_that_cannot_see_it(tmp_path):
    """With a local --storage on a cluster, a node that does not see the path stops the sweep before any trial."""
    pytest.importorskip("ray")
    from modelrl.runner.sweep import check_storage_visible

    class Probe:  # stands in for ray.remote(os.path.exists): the second node has its own disk
        def options(self, scheduling_strategy):
            self.node = scheduling_strategy.node_id
            return self

        def remote(self, path):
            return os.path.exists(path) and self.node == "aa" * 28

    class FakeRay:
        def nodes(self):
            return [{"NodeID": "aa" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.1"},  # Ray's 28-byte ids
                    {"NodeID": "bb" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.2"},
                    {"NodeID": "cc" * 28, "Alive": False, "NodeManagerAddress": "10.0.0.3"}]

        def remote(self, **kw):
            return lambda fn: Probe()

        def get(self, refs):
            return refs

    with pytest.raises(SweepError, match=r"not visible from the cluster node\(s\) 10.0.0.2: .*--storage"):
        check_storage_visible(FakeRay(), str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # the marker file is removed


def test_failed_trial_errors_lose_their_colour_codes():
    from modelrl.runner.sweep import _plain

    assert _plain("\x1b[36m(_trial pid=1)\x1b[0m ValueError: \x1b[1mbad\x1b[0m") == "(_trial pid=1) ValueError: bad"


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
    assert all(r["env_step"] == "30" and float(r["eval_return"]) < 0 and r["status"] == "finished" for r in rows)
    for r in rows:  # every trial is a full run directory with the fixed and varied fields applied
        import yaml

        saved = yaml.safe_load(open(out / r["run_dir"] / "config.yaml"))
        assert saved["agent"]["horizon"] == int(r["horizon"]) and saved["agent"]["hidden_size"] == 16
        assert saved["train"]["seed"] == int(r["seed"]) and saved["train"]["preset"] == "v1.5"
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["summary"]) == 2 and summary["failed_trials"] == [] and summary["complete"] is True
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def two_node_cluster():
    """A Ray head and a worker node on this machine, as docs/cli.md's recipe starts them (`ray start`, token
    authentication), each with its own temporary folder (its session files, and TMPDIR, where a trial stages its run
    directory) to stand in for each node's own disk. Yields (address, environment for clients)."""
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip("the ray command line is not installed")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    disks = [tempfile.mkdtemp(prefix="mrl-node-") for _ in range(2)]  # short: Ray's socket paths have a limit
    common = ["--num-cpus", "1", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    nodes = []
    try:
        for i, disk in enumerate(disks):
            where = ["--head", "--port", str(port), "--include-dashboard=false"] if i == 0 \
                else ["--address", f"127.0.0.1:{port}"]
            log = open(Path(disk) / "start.log", "w")
            nodes.append(subprocess.Popen([str(ray_cli), "start", *where, "--temp-dir", disk, *common],
                                          env={**env, "TMPDIR": disk}, stdout=log, stderr=subprocess.STDOUT))
            started = Path(disk) / "start.log"
            _wait_for(lambda started=started: "Ray runtime started" in started.read_text(), 90,
                      f"ray node {i} to start")

        def two_nodes() -> bool:
            out = subprocess.run([str(ray_cli), "status", "--address", f"127.0.0.1:{port}"], env=env,
                                 capture_output=True, text=True).stdout
            return out.split("Pending:")[0].count("node_") == 2

        _wait_for(two_nodes, 60, "both nodes to join the cluster")
        yield f"127.0.0.1:{port}", env
    finally:
        for proc in reversed(nodes):  # `ray start --block` stops its node's processes on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        import shutil

        for disk in disks:
            shutil.rmtree(disk, ignore_errors=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sweep_on_two_nodes_interrupted_then_resumed(tmp_path, two_node_cluster):
    """The acceptance check of sweeps on a cluster: 2 x 2 SAC trials on a two-node cluster; Ctrl-C after the first
    trial finishes. The interrupted sweep says it is incomplete (exit 1, complete: false, the missing trials listed);
    --resume keeps the finished trials untouched, continues the others from their checkpoints, and every trial's
    whole run directory ends at the storage location, linked from <sweep>/trials/."""
    address, env = two_node_cluster
    out, storage = tmp_path / "sweep", tmp_path / "storage"
    cli = [sys.executable, "-m", "modelrl.cli"]
    cmd = [*cli, "sweep", "sac", "--env", "Pendulum-v1", "--steps", "1600", "--grid", "hidden_size=16,32",
           "--seeds", "0,1", "--eval-every", "200", "--eval-episodes", "1", "--set", "explore_steps=50",
           "batch_size=32", "--address", address, "--storage", str(storage), "--out", str(out)]
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def finished(trial: Path) -> bool:
        return (trial / "result.json").exists() and '"finished": true' in (trial / "result.json").read_text()

    def mid_way() -> bool:  # one trial finished, another has a checkpoint and is still training
        trials = list(storage.glob("tune/trial_*"))
        return any(finished(t) for t in trials) and any(not finished(t) and list(t.glob("checkpoint_*/config.yaml"))
                                                        for t in trials)

    _wait_for(mid_way, 120, "one trial to finish and another to checkpoint")
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=120) == 1, (tmp_path / "sweep.log").read_text()[-3000:]
    printed = " ".join((tmp_path / "sweep.log").read_text().split())
    assert "sweep incomplete" in printed and f"modelrl sweep --resume {out}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["trials"] == 4 and 1 <= summary["finished"] < 4
    assert len(summary["missing_trials"]) == 4 - summary["finished"]
    rows = {(r["hidden_size"], r["seed"]): r for r in csv.DictReader(open(out / "sweep.csv"))}
    assert len(rows) == 4 and {r["status"] for r in rows.values()} - {"finished", "unfinished", "not started"} == set()
    done = {k: r for k, r in rows.items() if r["status"] == "finished"}
    before = {k: (_digest(out / r["run_dir"] / "metrics.csv"),
                  _digest(out / r["run_dir"] / "checkpoints" / "latest.pt"))
              for k, r in done.items()}
    first_rows = {}  # the unfinished trials' first evaluation, as their last checkpoint at the storage holds it
    for trial in storage.glob("tune/trial_*"):
        if not (trial / "params.json").exists():  # never started
            continue
        params = json.loads((trial / "params.json").read_text())
        key = (str(params["hidden_size"]), str(params["seed"]))
        ckpts = sorted(trial.glob("checkpoint_*/metrics.csv"))
        if key not in done and ckpts:
            first_rows[key] = ckpts[0].read_text().splitlines()[1]

    assert first_rows  # at least one trial continues from a checkpoint
    rc = subprocess.run([*cli, "sweep", "--resume", str(out), "--address", address], env=env,
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stdout[-2000:] + rc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["finished"] == 4 and summary["missing_trials"] == []
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 4 and all(r["status"] == "finished" and r["env_step"] == "1600" for r in rows)
    assert len({r["node"] for r in rows}) == 2  # the trials ran on both nodes
    for r in rows:
        key, run_dir = (r["hidden_size"], r["seed"]), out / r["run_dir"]
        # the whole run directory, at the storage location (trials/ links there)
        assert run_dir.resolve().is_relative_to(storage.resolve())
        assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "latest.pt").is_file()
        assert not (run_dir / "checkpoints" / "latest.prev.pt").exists()  # a second replay buffer, not uploaded
        assert list((run_dir / "plots").glob("*.png")) and list((run_dir / "tb").glob("events*"))
        metrics = (run_dir / "metrics.csv").read_text().splitlines()
        assert metrics[-1].startswith("1600,") and len(metrics) == 1 + 1600 // 200
        if key in before:  # finished before the interruption: not run again
            assert (_digest(run_dir / "metrics.csv"), _digest(run_dir / "checkpoints" / "latest.pt")) == before[key]
        elif key in first_rows:  # continued from its checkpoint: its first evaluation is the one logged before
            assert metrics[1] == first_rows[key]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
