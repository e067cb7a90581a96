"""make_env (Gymnasium, DMC, our cart-pole), its wrappers and errors, and true dynamics vs simulators."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch

from modelrl import Dynamics, make_env, true_dynamics
from modelrl.envs.cartpole import CartPoleParams, CartPoleSwingUpDynamics, CartPoleSwingUpEnv
from modelrl.envs.make import NonFiniteObservationError

ENV_IDS = ["Pendulum-v1", "CartPoleSwingUp-v0", "InvertedPendulum-v5", "dmc:cartpole-swingup"]
OBS_DIMS = {"Pendulum-v1": 3, "CartPoleSwingUp-v0": 5, "InvertedPendulum-v5": 4, "dmc:cartpole-swingup": 5}


def _actions(env: gymnasium.Env, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_are_normalised_and_flat(env_id: str) -> None:
    env = make_env(env_id, seed=0)
    assert isinstance(env.action_space, gymnasium.spaces.Box)
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    assert env.observation_space.dtype == np.float32
    assert env.observation_space.shape == (OBS_DIMS[env_id],)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert isinstance(float(reward), float) and not truncated
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seed_reproduces_first_obs_and_trajectory(env_id: str) -> None:
    a, b = make_env(env_id, seed=7), make_env(env_id, seed=7)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())
    for act in _actions(a, 30):
        step_a, step_b = a.step(act), b.step(act)
        np.testing.assert_array_equal(step_a[0], step_b[0])
        assert step_a[1:4] == step_b[1:4]
        if step_a[2] or step_a[3]:
            break
    other = make_env(env_id, seed=8)
    assert not np.array_equal(other.reset()[0], obs_a)
    # An explicit seed on reset wins over the stored one, and reseeding reproduces.
    np.testing.assert_array_equal(a.reset(seed=7)[0], obs_a)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_action_repeat_sums_rewards(env_id: str) -> None:
    single, double = make_env(env_id, seed=1), make_env(env_id, seed=1, action_repeat=2)
    np.testing.assert_array_equal(single.reset()[0], double.reset()[0])
    for act in _actions(single, 10, seed=1):
        obs2, r2, term2, trunc2, _ = double.step(act)
        obs1, r1a, term1, trunc1, _ = single.step(act)
        total = float(r1a)
        if not (term1 or trunc1):
            obs1, r1b, term1, trunc1, _ = single.step(act)
            total += float(r1b)
        np.testing.assert_array_equal(obs1, obs2)
        assert r2 == pytest.approx(total, abs=1e-12)
        assert (term1, trunc1) == (term2, trunc2)
        if term1 or trunc1:
            break


def test_action_repeat_stops_at_truncation() -> None:
    env = make_env("CartPoleSwingUp-v0", seed=0, action_repeat=3)
    env.reset()
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        assert not terminated
        steps += 1
    assert steps == math.ceil(200 / 3)


def test_dmc_truncates_at_time_limit() -> None:
    from modelrl.envs.dmc import DMCEnv

    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=8)
    env.reset()
    dmc = env.unwrapped
    assert isinstance(dmc, DMCEnv)
    assert dmc.max_episode_steps == 1000
    assert dmc.obs_keys == ("position", "velocity")
    for t in range(1, 200):  # noqa: B007  # read after the loop: the step that truncated
        _, _, terminated, truncated, _ = env.step(np.zeros(1, dtype=np.float32))
        assert not terminated
        if truncated:
            break
    assert t == 125
    with pytest.raises(RuntimeError, match="reset"):
        dmc.step(np.zeros(1))


def test_dmc_parses_underscored_domains_and_tasks() -> None:
    env = make_env("dmc:ball_in_cup-catch", seed=0)
    assert env.action_space.shape == (2,) and env.observation_space.shape == (8,)
    from modelrl.envs.dmc import DMCEnv, parse_dmc_id

    dmc = env.unwrapped
    assert isinstance(dmc, DMCEnv) and (dmc.domain, dmc.task) == ("ball_in_cup", "catch")

    assert parse_dmc_id("dmc:finger-turn_easy") == ("finger", "turn_easy")
    assert parse_dmc_id("dmc:cup-catch") == ("ball_in_cup", "catch")  # TD-MPC's spelling


def test_unknown_gymnasium_id_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="Pendulum-v1"):
        make_env("Pendulm-v1")


def test_unknown_dmc_task_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="dmc:cartpole-swingup"):
        make_env("dmc:cartpole-swingupp")
    with pytest.raises(ValueError, match="balance"):
        make_env("dmc:cartpole-nothing")
    with pytest.raises(ValueError, match="dmc:ball_in_cup-catch"):
        make_env("dmc:ball_in_cupp-catch")


@pytest.mark.parametrize("repeat", [0, -1, 1.5])
def test_bad_action_repeat_raises(repeat) -> None:
    with pytest.raises(ValueError, match="action_repeat"):
        make_env("Pendulum-v1", action_repeat=repeat)


class _NaNAfterThree(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t, np.nan if self.t >= 3 else 0.0], np.float32)
        return obs, 0.0, False, False, {}


def test_non_finite_observation_names_env_and_step() -> None:
    env_id = "ModelrlTestNaN-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=_NaNAfterThree,  # type: ignore[arg-type]  # a class builds it
                           disable_env_checker=True)
    env = make_env(env_id, seed=0)
    env.reset()
    env.step(np.zeros(1))
    env.step(np.zeros(1))
    with pytest.raises(NonFiniteObservationError, match=r"ModelrlTestNaN-v0.*step 3"):
        env.step(np.zeros(1))


def test_normalised_actions_map_onto_bounds_and_clip() -> None:
    env = make_env("InvertedPendulum-v5")
    wrapper: Any = env  # the wrapper that has _center, somewhere in the stack
    while not hasattr(wrapper, "_center"):
        wrapper = wrapper.env
    np.testing.assert_allclose(wrapper.action(np.array([1.0])), [3.0])
    np.testing.assert_allclose(wrapper.action(np.array([-0.5])), [-1.5])
    np.testing.assert_allclose(wrapper.action(np.array([7.0])), [3.0])


def _rollout_check(env: gymnasium.Env, model: Dynamics, state_of, episodes: int = 3, seed: int = 0) -> None:
    """Feed the env's state and the action to the model in float64; compare next obs and reward."""
    rng = np.random.default_rng(seed)
    worst_obs = worst_rew = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            act = rng.uniform(-1.5, 1.5, size=env.action_space.shape)  # beyond [-1, 1]: clipping
            state = torch.as_tensor(state_of(env, obs), dtype=torch.float64)[None]
            pred, pred_r = model.step(state, torch.as_tensor(act, dtype=torch.float64)[None])
            obs, reward, terminated, truncated, _ = env.step(act)
            worst_obs = max(worst_obs, float(np.abs(pred[0].numpy() - obs).max()))
            worst_rew = max(worst_rew, abs(float(pred_r[0]) - float(reward)))
            done = terminated or truncated
    assert worst_obs < 1e-5, worst_obs
    assert worst_rew < 1e-5, worst_rew


def test_pendulum_true_dynamics_match_from_float32_obs() -> None:
    _rollout_check(make_env("Pendulum-v1"), true_dynamics("Pendulum-v1"), lambda env, obs: obs)


def test_pendulum_true_dynamics_match_from_internal_state() -> None:
    def internal(env, obs):
        th, thdot = env.unwrapped.state
        return [math.cos(th), math.sin(th), thdot]

    _rollout_check(make_env("Pendulum-v1"), true_dynamics("Pendulum-v1"), internal)


def test_cartpole_true_dynamics_match_simulator() -> None:
    model = true_dynamics("CartPoleSwingUp-v0")
    assert isinstance(model, CartPoleSwingUpDynamics) and isinstance(model, Dynamics)
    _rollout_check(make_env("CartPoleSwingUp-v0"), model, lambda env, obs: obs)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPoleSwingUp-v0"])
def test_batched_step_equals_row_by_row(env_id: str) -> None:
    model = true_dynamics(env_id)
    gen = torch.Generator().manual_seed(0)
    theta = torch.rand(16, generator=gen, dtype=torch.float64) * 2 * math.pi
    if env_id == "Pendulum-v1":
        state = torch.stack([theta.cos(), theta.sin(), torch.randn(16, generator=gen, dtype=torch.float64)], -1)
    else:
        x, xd, thd = torch.randn(3, 16, generator=gen, dtype=torch.float64)
        state = torch.stack([x, xd, theta.cos(), theta.sin(), thd], -1)
    action = torch.rand(16, 1, generator=gen, dtype=torch.float64) * 3 - 1.5
    nxt, rew = model.step(state, action)
    assert nxt.shape == state.shape and rew.shape == (16,)
    for i in range(16):
        n_i, r_i = model.step(state[i : i + 1], action[i : i + 1])
        assert float((n_i[0] - nxt[i]).abs().max()) < 1e-12
        assert abs(float(r_i[0] - rew[i])) < 1e-12


def test_cartpole_dynamics_float32_and_differentiable() -> None:
    model = CartPoleSwingUpDynamics()
    state = torch.tensor([[0.1, 0.0, -1.0, 0.0, 0.2]], requires_grad=True)
    action = torch.tensor([[0.3]], requires_grad=True)
    nxt, rew = model.step(state, action)
    assert nxt.dtype == torch.float32 and rew.dtype == torch.float32
    (nxt.sum() + rew.sum()).backward()
    assert state.grad is not None and action.grad is not None
    assert torch.isfinite(state.grad).all() and torch.isfinite(action.grad).all()


def test_cartpole_accelerations_follow_florian_equations() -> None:
    """One 1-substep Euler step from rest at a tilt equals the textbook accelerations times dt."""
    p = CartPoleParams(dt=0.01, substeps=1)
    th, thd, u = 0.3, 0.7, 0.4
    force, total = p.max_force * u, p.cart_mass + p.pole_mass
    m_p, l, s, c = p.pole_mass, p.half_length, math.sin(th), math.cos(th)  # noqa: E741  # l as in Florian's paper
    th_acc = (p.gravity * s + c * (-force - m_p * l * thd**2 * s) / total) / (l * (4 / 3 - m_p * c**2 / total))
    x_acc = (force + m_p * l * (thd**2 * s - th_acc * c)) / total
    state = torch.tensor([[0.0, 0.0, math.cos(th), math.sin(th), thd]], dtype=torch.float64)
    nxt, _ = CartPoleSwingUpDynamics(p).step(state, torch.tensor([[u]], dtype=torch.float64))
    assert float(nxt[0, 1]) == pytest.approx(p.dt * x_acc, abs=1e-12)
    assert float(nxt[0, 0]) == pytest.approx(p.dt * p.dt * x_acc, abs=1e-12)
    assert float(nxt[0, 4]) == pytest.approx(thd + p.dt * th_acc, abs=1e-12)
    new_th = th + p.dt * (thd + p.dt * th_acc)
    assert float(nxt[0, 2]) == pytest.approx(math.cos(new_th), abs=1e-12)


def test_cartpole_reset_reward_and_render() -> None:
    env = CartPoleSwingUpEnv(render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert np.all(np.abs(obs[[0, 1, 4]]) <= 0.05) and obs[2] < -0.99  # hanging down
    env.state = np.array([0.0, 0.0, 0.0, 0.0])  # perfectly balanced at the centre
    obs, reward, terminated, truncated, _ = env.step(np.zeros(1))
    assert reward == pytest.approx(1.0, abs=1e-9) and not terminated and not truncated
    env.state = np.array([0.0, 0.0, math.pi, 0.0])  # hanging down at rest: stays, scores 0
    obs, reward, *_ = env.step(np.zeros(1))
    assert abs(obs[3]) < 1e-6 and obs[2] == pytest.approx(-1.0) and reward == pytest.approx(0.0, abs=1e-12)
    frame = env.render()
    assert frame is not None and frame.shape == (160, 320, 3) and frame.dtype == np.uint8


def test_dmc_render_rgb_array() -> None:
    """Rendering needs an OpenGL backend chosen before dm_control is imported: use a fresh process."""
    code = (
        "from modelrl import make_env\n"
        "env = make_env('dmc:pendulum-swingup', seed=0, render_mode='rgb_array', height=48, width=64)\n"
        "env.reset()\n"
        "print(env.render().shape)\n"
    )
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.skip(f"MuJoCo rendering unavailable here: {out.stderr.strip().splitlines()[-1:]}")
    assert out.stdout.strip().splitlines()[-1] == "(48, 64, 3)"


def test_pendulum_transition_is_steps_next_state():
    """``transition`` (the next state alone, for step-function-only planners) is ``step`` without the reward."""
    import torch

    from modelrl.envs import PendulumDynamics

    dyn, g = PendulumDynamics(), torch.Generator().manual_seed(0)
    th = torch.rand(64, generator=g) * 6.28 - 3.14
    s = torch.stack([th.cos(), th.sin(), torch.randn(64, generator=g) * 4], dim=1)
    a = torch.rand(64, 1, generator=g) * 3 - 1.5  # beyond the bounds too: both clamp
    assert torch.equal(dyn.transition(s, a), dyn.step(s, a)[0])
