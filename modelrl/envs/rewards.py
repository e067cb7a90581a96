"""Known reward and termination functions of (obs, action, next_obs), for planning through a learned model.

A learned dynamics model predicts the next observation; where the task's reward is a known
function of the transition, planning uses it instead of a learned reward (PETS does the same).
Each function is batched torch: ``reward(obs[B,S], action[B,A], next_obs[B,S]) -> [B]`` and
``terminal(next_obs[B,S]) -> bool[B]``. They are tested against the environments' own rewards.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from modelrl.envs.cartpole import ENV_ID as CARTPOLE_ID
from modelrl.envs.cartpole import _reward as cartpole_reward_terms
from modelrl.envs.true_dynamics import PendulumDynamics

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
TerminalFn = Callable[[Tensor], Tensor]


class TaskFunctions(NamedTuple):
    reward: RewardFn
    terminal: TerminalFn | None = None
    planning_reward: RewardFn | None = None
    """What planners optimise where it differs from ``reward`` (a tie-breaker for flat rewards); None: ``reward``."""

    def for_planning(self, shaped: bool = True) -> RewardFn:
        """The reward a planner should maximise: the shaped one where the task has one and ``shaped``."""
        return self.planning_reward if shaped and self.planning_reward is not None else self.reward


_PENDULUM = PendulumDynamics()


def pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Pendulum-v1: -(th^2 + 0.1 thdot^2 + 0.001 u^2) on the state before the step (the true model's)."""
    return _PENDULUM.step(obs, action)[1]


def cartpole_swingup_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """CartPoleSwingUp-v0: upright * centered * small_control * small_velocity on the state after the step."""
    u = action[:, 0].clamp(-1.0, 1.0)
    return cartpole_reward_terms(next_obs[:, 0], next_obs[:, 2], next_obs[:, 4], u, torch.exp)


def inverted_pendulum_terminal(next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5 ends when the pole angle (obs[1]) leaves [-0.2, 0.2] or the state is not finite."""
    return (next_obs[:, 1].abs() > 0.2) | ~torch.isfinite(next_obs).all(dim=-1)


def inverted_pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5 pays 1 for every step that does not end the episode."""
    return (~inverted_pendulum_terminal(next_obs)).to(next_obs.dtype)


# -- MuJoCo locomotion (Gymnasium v5, default arguments). The observation drops the root x position,
# so the forward velocity (x' - x) / dt that the env pays cannot be recovered exactly; we use the
# trapezoid of the root x velocity in obs and next_obs, which is close where the physics substeps are
# many (Hopper, Walker2d: 4 substeps of 2 ms, RK4) and rougher on HalfCheetah (5 Euler substeps of 10 ms
# with contacts). The errors measured on random-action rollouts are documented in docs/environments.md
# and bounded in tests/test_rewards.py. Control cost and health/termination terms are exact.
class _Locomotion(NamedTuple):
    vel_index: int  # index of the root x velocity in the observation (after qpos[1:] or qpos[2:])
    ctrl_cost: float  # ctrl_cost_weight (Gymnasium v5 default)
    healthy_reward: float = 0.0  # 1.0 for Hopper and Walker2d (Gymnasium v5 default)
    z_range: tuple[float, float] | None = None  # healthy_z_range (obs[0] is the torso height)
    angle_range: tuple[float, float] | None = None  # healthy_angle_range (obs[1] is the torso angle)
    state_bound: float | None = None  # Hopper: every entry of qpos[2:], qvel inside (-100, 100)


_LOCOMOTION = {
    "HalfCheetah-v5": _Locomotion(8, 0.1),
    "Hopper-v5": _Locomotion(5, 1e-3, 1.0, (0.7, float("inf")), (-0.2, 0.2), 100.0),
    "Walker2d-v5": _Locomotion(8, 1e-3, 1.0, (0.8, 2.0), (-1.0, 1.0)),
    "Swimmer-v5": _Locomotion(3, 1e-4),
}


def _locomotion_functions(spec: _Locomotion) -> TaskFunctions:
    def healthy(next_obs: Tensor) -> Tensor:
        ok = torch.isfinite(next_obs).all(dim=-1)
        if spec.z_range is not None:
            z = next_obs[:, 0]
            ok = ok & (z > spec.z_range[0]) & (z < spec.z_range[1])
        if spec.angle_range is not None:
            angle = next_obs[:, 1]
            ok = ok & (angle > spec.angle_range[0]) & (angle < spec.angle_range[1])
        if spec.state_bound is not None:
            ok = ok & (next_obs[:, 1:].abs() < spec.state_bound).all(dim=-1)
        return ok

    def reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        forward = 0.5 * (obs[:, spec.vel_index] + next_obs[:, spec.vel_index])
        ctrl = spec.ctrl_cost * action.clamp(-1.0, 1.0).square().sum(dim=-1)  # ctrl range is [-1, 1]
        out = forward - ctrl
        if spec.healthy_reward:
            out = out + spec.healthy_reward * healthy(next_obs).to(out.dtype)
        return out

    def terminal(next_obs: Tensor) -> Tensor:
        return ~healthy(next_obs)

    return TaskFunctions(reward, terminal if spec.z_range is not None else None)


def inverted_pendulum_planning_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5's reward minus 0.5 x'^2 (x: cart position, |x| <= 1 on the rail).

    The survival reward is flat: every plan that keeps the pole up over the horizon scores the same,
    so the cart drifts until it hits the end of the rail, where the pole falls. The centring term
    breaks the tie (at most 0.5 per step, never worth a fall). Measured (seed 0): without it every
    evaluation episode of the v1.5 agent ended at x = -1.0 after 166-265 steps; with a weight of 0.1
    MPPI (temperature 0.1) on the true simulator still drifted to the rail (577 steps): the
    differences were too small against the temperature.
    """
    return inverted_pendulum_reward(obs, action, next_obs) - 0.5 * next_obs[:, 0].square()


TASKS: dict[str, TaskFunctions] = {
    "Pendulum-v1": TaskFunctions(pendulum_reward),
    CARTPOLE_ID: TaskFunctions(cartpole_swingup_reward),
    "InvertedPendulum-v5": TaskFunctions(inverted_pendulum_reward, inverted_pendulum_terminal,
                                         inverted_pendulum_planning_reward),
    **{env_id: _locomotion_functions(spec) for env_id, spec in _LOCOMOTION.items()},
}


def register_task_functions(env_id: str, reward: RewardFn, terminal: TerminalFn | None = None) -> None:
    """Give a custom environment a known reward (and termination) for planning through learned models."""
    TASKS[env_id] = TaskFunctions(reward, terminal)


def task_functions(env_id: str | None) -> TaskFunctions | None:
    """The known reward (and termination) of ``env_id``, or None where the reward must be learned."""
    return TASKS.get(env_id) if env_id is not None else None


def can_terminate(env_id: str | None) -> bool | None:
    """Whether episodes of ``env_id`` can end by termination (not only by the time limit): False for DeepMind
    Control (its tasks run to the time limit) and for the known tasks without a termination function; True for
    the known ones with one (InvertedPendulum, Hopper, Walker2d, Ant, Humanoid); None where it is unknown."""
    if env_id is None:
        return None
    if env_id.startswith("dmc:"):
        return False
    known = task_functions(env_id)
    return None if known is None else known.terminal is not None
