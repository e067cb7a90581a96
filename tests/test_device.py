"""The run-level device, portable generator states and checkpoints, per-row loss averages, lockstep
evaluation and batched planning. Tests marked ``gpu`` run only where CUDA exists."""
import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from modelrl.agents import make
from modelrl.device import generator_state, load_generator_state, resolve_device
from modelrl.envs import PendulumDynamics, make_env
from modelrl.planners import MPPI, rollout_returns
from modelrl.runner.train import LossMeter, TrainConfig, evaluate, train

from conftest import metrics_rows

HAS_CUDA = torch.cuda.is_available()


def gpu(test):
    """Marked ``gpu`` (``pytest -m gpu`` selects them) and skipped where no CUDA device exists."""
    return pytest.mark.gpu(pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")(test))


def test_resolve_device_names_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_generator_state_round_trip_and_across_device_types():
    gen = torch.Generator().manual_seed(5)
    saved = generator_state(gen)
    first = torch.randn(4, generator=gen)
    other = torch.Generator()
    load_generator_state(other, saved)
    assert torch.equal(torch.randn(4, generator=other), first)  # same device type: exact
    load_generator_state(other, saved["state"])  # a bare state (checkpoints of earlier versions)
    assert torch.equal(torch.randn(4, generator=other), first)
    foreign = {"device": "cuda", "state": torch.arange(16, dtype=torch.uint8)}  # a CUDA state, read on a CPU
    with pytest.warns(UserWarning, match="reseeded"):
        load_generator_state(other, foreign)
    a = torch.randn(4, generator=other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_generator_state(other, foreign)
    assert torch.equal(torch.randn(4, generator=other), a)  # deterministic reseed


def test_a_failed_compilation_falls_back_to_eager(monkeypatch):
    """Where torch.compile cannot compile (no C++ compiler, say), ``compiled`` warns once and runs eagerly."""
    from torch._dynamo.exc import TorchDynamoException

    from modelrl.device import compiled

    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise TorchDynamoException("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    f = compiled(lambda x: x + 1)
    with pytest.warns(UserWarning, match="eagerly"):
        assert f(1) == 2
    assert f(2) == 3  # eager from then on
    assert compiled(abs, enabled=False) is abs


def test_loss_meter_averages_tensors_keeps_latest_numbers_and_checkpoints():
    m = LossMeter()
    m.add({"loss": torch.tensor(1.0), "updates": 1.0})
    m.add({"loss": torch.tensor(3.0), "updates": 2.0})
    saved = m.state_dict()
    assert m.row() == {"loss": 2.0, "updates": 2.0}
    assert m.row() == {}  # a fresh start for the next row
    again = LossMeter()
    again.load_state_dict(saved)
    again.add({"loss": torch.tensor(5.0)})
    assert again.row() == {"loss": 3.0, "updates": 2.0}


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5"])
def test_lockstep_evaluation_equals_one_episode_after_another(env_id):
    """A deterministic policy gets the same returns in lockstep as sequentially (same reset seeds); on
    InvertedPendulum episodes end at different steps, so finished ones must be masked out."""
    env = make_env(env_id, seed=0)
    agent = make("sac", env, seed=0, device="cpu")
    lock = evaluate(agent, env_id, 4, seed=1, lockstep=True)
    seq = evaluate(agent, env_id, 4, seed=1, lockstep=False)
    assert lock == pytest.approx(seq, rel=1e-6)  # equal up to the rounding of a batched matmul
    if env_id == "InvertedPendulum-v5":
        assert len(set(np.round(lock, 6))) > 1  # the episodes really differ in length


def test_finished_episodes_leave_the_lockstep_batch_with_their_warm_starts():
    """Planner.keep_rows keeps the chosen problems' warm starts, in order; a TD-MPC agent evaluated in
    lockstep on InvertedPendulum (episodes of different lengths) plans only for the episodes still running."""
    planner = MPPI(PendulumDynamics(), (np.array([-1.0]), np.array([1.0])), horizon=5, num_samples=50, seed=0)
    states = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, -2.0]], dtype=np.float32)
    planner.act(states)
    warm = planner._warm.clone()
    planner.keep_rows(np.array([0, 2]))
    assert torch.equal(planner._warm, warm[:, [0, 2]])
    assert planner.act(states[[0, 2]]).shape == (2, 1)

    env = make_env("InvertedPendulum-v5", seed=0)
    agent = make("tdmpc", env, seed=0, device="cpu", mlp_dim=32, enc_dim=16, latent_dim=8, num_samples=16,
                 num_elites=4, iterations=2, horizon=3)
    batches = []
    act_batch = agent.act_batch
    agent.act_batch = lambda obs, deterministic=False: batches.append(len(obs)) or act_batch(obs, deterministic)
    from modelrl.runner.evaluate import run_episodes

    envs = [make_env("InvertedPendulum-v5", seed=0) for _ in range(4)]
    returns, lengths, _ = run_episodes(agent, envs, [1, 2, 3, 4], lockstep=True)
    assert len(set(lengths)) > 1 and returns == [float(n - 1) for n in lengths]  # 1 per step upright, 0 as it falls
    assert batches[0] == 4 and batches[-1] == 1 and sorted(batches, reverse=True) == batches
    assert sum(batches) == sum(lengths)  # one planned row per step actually taken


def test_batched_mppi_plans_each_problem_as_well_as_alone():
    """B pendulum states planned in one call: each row's plan is as good (through the true model) as a
    plan made for that state alone, and rows keep separate warm starts."""
    dyn = PendulumDynamics()
    states = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, -2.0], [0.7, -0.7, 0.5]])
    batched = MPPI(dyn, (np.array([-1.0]), np.array([1.0])), horizon=15, num_samples=500, temperature=0.1, seed=0)
    plans = batched.plan(states.numpy())
    assert plans.shape == (4, 15, 1) and batched._warm.shape == (15, 4, 1)
    gaps = []
    for i, s in enumerate(states):
        alone = MPPI(dyn, (np.array([-1.0]), np.array([1.0])), horizon=15, num_samples=500, temperature=0.1,
                     seed=i + 1).plan(s.numpy())
        r_batch = rollout_returns(dyn, s, plans[i][None])[0]
        r_alone = rollout_returns(dyn, s, alone[None])[0]
        gaps.append(float(abs(r_batch - r_alone) / (abs(r_alone) + 1.0)))
    assert max(gaps) < 0.1, gaps
    first = batched.act(states.numpy())
    assert first.shape == (4, 1)
    with pytest.raises(ValueError, match="batch"):
        batched.plan(states[:2].numpy())


def test_cpu_run_resumes_with_an_explicit_device(tmp_path):
    """``train(..., device=...)`` on resume: a run started with ``auto`` continues on ``cpu`` exactly."""
    cfg = TrainConfig("sac", "Pendulum-v1", 400, seed=0, eval_every=200, eval_episodes=2, device="auto")
    over = {"explore_steps": 100, "batch_size": 32, "hidden_size": 32}
    _, full = train(cfg, overrides=over, out=tmp_path / "full", progress=False)
    _, part = train(TrainConfig(**{**cfg.__dict__, "steps": 200}), overrides=over, out=tmp_path / "part",
                    progress=False)
    import yaml

    saved = yaml.safe_load((part / "config.yaml").read_text())
    saved["train"]["steps"] = 400
    (part / "config.yaml").write_text(yaml.safe_dump(saved))
    train(cfg, resume=part, progress=False, device="cpu")
    strip = [{k: v for k, v in r.items() if not k.endswith(("wall_s", "cpu_s")) and not k.startswith("time_")}
             for r in metrics_rows(full)]
    again = [{k: v for k, v in r.items() if not k.endswith(("wall_s", "cpu_s")) and not k.startswith("time_")}
             for r in metrics_rows(part)]
    assert strip == again


# -- on a GPU ---------------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("algo, over", [
    ("tdmpc", {"mlp_dim": 32, "enc_dim": 16, "latent_dim": 8, "num_samples": 16, "num_elites": 4, "iterations": 2,
               "batch_size": 16, "horizon": 3, "explore_steps": 50}),
    ("tdmpc2", {"mlp_dim": 32, "enc_dim": 16, "latent_dim": 16, "num_samples": 16, "num_elites": 4,
                "num_pi_trajs": 4, "iterations": 2, "batch_size": 16, "explore_steps": 50, "num_bins": 11}),
    ("sac", {"explore_steps": 50, "batch_size": 32}),
    ("mpc", {"explore_steps": 50, "model_epochs": 2}),
])
def test_gpu_run_resumes_exactly_and_evaluates_on_the_cpu(tmp_path, crash_and_resume, algo, over):
    """On CUDA: a crashed run resumes bit for bit; its checkpoint then loads and evaluates on the CPU, and
    a CPU checkpoint resumes on CUDA."""
    from modelrl.runner.evaluate import evaluate_run

    cfg = TrainConfig(algo, "Pendulum-v1", 300, seed=0, eval_every=100, eval_episodes=2, device="cuda")
    full, a, _, b = crash_and_resume(cfg, over, crash_at=250)
    assert a == b
    res = evaluate_run(full, episodes=2, device="cpu")
    assert np.isfinite(res["mean_return"])
    cpu_cfg = TrainConfig(algo, "Pendulum-v1", 200, seed=0, eval_every=100, eval_episodes=2, device="cpu")
    _, run = train(cpu_cfg, overrides=over, out=tmp_path / "cpu", progress=False)
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["steps"] = 300
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generator states are reseeded across device types
        agent, _ = train(cpu_cfg, resume=run, progress=False, device="cuda")
    assert agent.device.type == "cuda" and len(metrics_rows(run)) == 3


@gpu
def test_gpu_learning_matches_the_cpu_test():
    """The short TD-MPC learning check of test_tdmpc.py (its SMALL settings), on CUDA."""
    small = {"mlp_dim": 64, "enc_dim": 64, "num_samples": 64, "num_elites": 8, "iterations": 3, "batch_size": 64,
             "explore_steps": 400, "schedule_steps": 2000,
             "compile": False}  # test_tdmpc.SMALL (that module needs tyro)
    cfg = TrainConfig("tdmpc", "Pendulum-v1", 1600, seed=0, preset="cpu", eval_every=800, eval_episodes=3,
                      device="cuda")
    _, run = train(cfg, overrides=small, progress=False)
    assert float(metrics_rows(run)[-1]["eval_return"]) >= -200.0


def test_sac_configs_written_with_the_old_device_field_still_load():
    """Run directories of earlier versions hold ``agent: device: cpu`` for SAC and MBPO; the field is now the
    run-level --device, so it is ignored when read (and the agent follows the run's device)."""
    from modelrl.agents import build_config
    from modelrl.agents.mbpo import MBPOConfig
    from modelrl.agents.sac import SACConfig

    for cls in (SACConfig, MBPOConfig):
        cfg = build_config(cls, None, device="cpu", batch_size=64)
        assert cfg.batch_size == 64 and not hasattr(cfg, "device")
    with pytest.raises(ValueError, match="devic"):
        build_config(SACConfig, None, devic="cpu")


FLAG_PROBE = "from modelrl.device import keep_freed_memory as k; print(k(), k())"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_applies_once_per_process_unless_turned_off_or_set_by_the_user():
    """Its effect on speed (page faults, time per plan) is measured by ``benchmarks.pets_speed``."""
    def run(**env):
        full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
        return subprocess.run([sys.executable, "-c", FLAG_PROBE], env=full, capture_output=True, text=True,
                              check=True).stdout.split()

    assert run() == ["True", "True"]
    assert run(MODELRL_KEEP_FREED_MEMORY="0") == ["False", "False"]
    assert run(MALLOC_TRIM_THRESHOLD_="131072") == ["False", "False"]  # the user's own setting stands
