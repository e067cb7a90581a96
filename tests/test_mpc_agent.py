"""The MPC agent learns: a short v1.5 run on Pendulum-v1 (the full curves belong in benchmarks/)."""
import pytest

from modelrl.agents import make
from modelrl.envs import make_env
from modelrl.runner.train import TrainConfig, train


@pytest.mark.slow
def test_v15_learns_pendulum_swing_up_in_800_steps(tmp_path):
    """v1.5 (MLP refit every episode, MPPI) from 200 random steps: mean eval return >= -200 at 800 steps.

    The preset's 128x3 network and 300 samples keep the test under a minute; measured on seeds
    0/1/2: -84 / -125 / -216 (3 evaluation episodes), so seed 0 has margin.
    """
    cfg = TrainConfig("mpc", "Pendulum-v1", 800, seed=0, preset="v1.5", eval_every=800, eval_episodes=3)
    agent, run = train(cfg, out=tmp_path / "v15", progress=False)
    import csv

    last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    assert float(last["eval_return"]) >= -200.0
    assert agent.refits == 4  # one fit after the random episode, then one per episode


@pytest.mark.slow
def test_pets_cpu_learns_pendulum_swing_up_in_600_steps(tmp_path):
    """PETS (ensemble of 5, TS1, CEM) from one random episode: mean eval return >= -200 at 600 steps.

    The benchmark's Pendulum settings (horizon 25, model batches of 32; benchmarks/mpc_learning.py)
    on seed 0, three episodes in all; the full 1,000-step, 3-seed, 10-episode check is the benchmark.
    """
    cfg = TrainConfig("mpc", "Pendulum-v1", 600, seed=0, preset="pets-cpu", eval_every=600, eval_episodes=3)
    agent, run = train(cfg, overrides={"horizon": 25, "model_batch_size": 32}, out=tmp_path / "pets", progress=False)
    import csv

    last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    assert float(last["eval_return"]) >= -200.0
    assert agent.refits == 3


def test_mpc_agent_config_errors():
    env = make_env("Pendulum-v1")
    with pytest.raises(ValueError, match="planner"):
        make("mpc", env, planner="lqr")
    with pytest.raises(ValueError, match="Unknown field.*hiden_size.*hidden_size"):
        make("mpc", env, hiden_size=3)
    with pytest.raises(ValueError, match="no known reward"):
        make("mpc", make_env("Ant-v5"), learn_reward=False)
    with pytest.raises(ValueError, match="ilqr optimises one trajectory.*ts1 or mean"):
        make("mpc", env, preset="pets", planner="ilqr")  # was: a model error deep in the first plan
    assert make("mpc", env, preset="pets-cpu", planner="ilqr").planning_flops() is None  # not a sampling planner


def test_a_run_whose_planning_takes_hours_is_warned_before_it_starts(monkeypatch):
    """PETS at the paper's settings (183 GFLOP per action on Pendulum-v1) gets a warning with the time it would
    take on this machine and the lighter preset; v1.5 (0.3 GFLOP) does not. The machine's rate is fixed here."""
    import modelrl.runner.train as loop
    from modelrl.agents import make
    from modelrl.agents.mpc import MPCConfig
    from modelrl.envs import make_env

    monkeypatch.setattr(loop, "matmul_flops_per_s", lambda: 50e9)
    env = make_env("Pendulum-v1")
    pets = make("mpc", env, preset="pets")
    assert pets.planning_flops() == pytest.approx(183e9, rel=0.01)
    cfg = loop.TrainConfig("mpc", "Pendulum-v1", 10_200, preset="pets")
    with pytest.warns(UserWarning) as caught:
        text = loop.warn_if_planning_is_slow(pets, cfg, MPCConfig)
    assert str(caught[0].message) == text
    assert "183 GFLOP per action" in text and "3.7 s per action" in text and "10,000 planned steps" in text
    assert "--preset pets-cpu (3.1 GFLOP per action, about 0.06 s)" in text
    v15 = make("mpc", env, preset="v1.5")
    assert loop.warn_if_planning_is_slow(v15, loop.TrainConfig("mpc", "Pendulum-v1", 10_200), MPCConfig) is None
