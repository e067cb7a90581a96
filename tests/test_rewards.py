"""Known reward and termination functions agree with the environments' own, transition by transition."""
import numpy as np
import pytest
import torch

from modelrl.envs import make_env
from modelrl.envs.rewards import task_functions


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPoleSwingUp-v0", "InvertedPendulum-v5"])
def test_reward_and_termination_match_env(env_id):
    fns = task_functions(env_id)
    env = make_env(env_id, seed=0)
    rng = np.random.default_rng(0)
    checked = ended = 0
    for ep in range(5):
        obs, _ = env.reset(seed=ep)
        done = False
        while not done:
            action = rng.uniform(-1.2, 1.2, size=env.action_space.shape).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            o, a, n = (torch.as_tensor(x, dtype=torch.float64)[None] for x in (obs, action, next_obs))
            assert fns.reward(o, a, n).item() == pytest.approx(reward, abs=1e-5)
            if fns.terminal is not None:
                assert bool(fns.terminal(n).item()) == terminated
            ended += terminated
            checked += 1
            obs, done = next_obs, terminated or truncated
    assert checked >= 20
    if env_id == "InvertedPendulum-v5":
        assert ended == 5  # random actions topple the pole in every episode: the terminal branch is exercised


# Bound on the per-step reward error (the forward velocity is a trapezoid estimate; see rewards.py) and the
# errors measured on these rollouts when written: HalfCheetah 0.15, Hopper 0.002, Walker2d 0.008, Swimmer 0.009.
LOCOMOTION_MEAN_ABS_ERROR = {"HalfCheetah-v5": 0.25, "Hopper-v5": 0.01, "Walker2d-v5": 0.02, "Swimmer-v5": 0.02}


@pytest.mark.parametrize("env_id", sorted(LOCOMOTION_MEAN_ABS_ERROR))
def test_locomotion_rewards_track_env_and_terminations_match(env_id):
    fns = task_functions(env_id)
    env = make_env(env_id, seed=0)
    rng = np.random.default_rng(0)
    ours, theirs, ended = [], [], 0
    obs, _ = env.reset(seed=0)
    for _ in range(400):
        action = rng.uniform(-1.2, 1.2, size=env.action_space.shape).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        o, a, n = (torch.as_tensor(x, dtype=torch.float64)[None] for x in (obs, action, next_obs))
        ours.append(fns.reward(o, a, n).item())
        theirs.append(reward)
        if fns.terminal is not None:
            assert bool(fns.terminal(n).item()) == terminated
        ended += terminated
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    ours, theirs = np.array(ours), np.array(theirs)
    assert np.abs(ours - theirs).mean() < LOCOMOTION_MEAN_ABS_ERROR[env_id]
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9
    if fns.terminal is not None:
        assert ended > 0  # random actions make Hopper and Walker2d fall: the terminal branch is exercised


def test_unknown_task_has_no_known_reward():
    assert task_functions("Ant-v5") is None and task_functions(None) is None


def test_register_task_functions_for_a_custom_env():
    from modelrl.envs.rewards import TASKS, register_task_functions

    register_task_functions("MyTask-v0", reward=lambda s, a, s2: -(s2**2).sum(-1))
    try:
        fns = task_functions("MyTask-v0")
        assert fns.terminal is None
        assert fns.reward(None, None, torch.ones(2, 3)).tolist() == [-3.0, -3.0]
    finally:
        del TASKS["MyTask-v0"]


def test_planning_reward_breaks_ties_without_outweighing_survival():
    fns = task_functions("InvertedPendulum-v5")
    assert task_functions("Pendulum-v1").for_planning() is task_functions("Pendulum-v1").reward
    assert fns.for_planning(shaped=False) is fns.reward
    s = torch.zeros(3, 4)
    s2 = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0]])
    shaped, plain = fns.for_planning()(s, torch.zeros(3, 1), s2), fns.reward(s, torch.zeros(3, 1), s2)
    assert plain.tolist() == [1.0, 1.0, 0.0]
    assert shaped[0] == 1.0 and 0.5 < shaped[1] < 1.0  # off-centre costs something ...
    assert shaped[1] > shaped[2]  # ... far less than falling
