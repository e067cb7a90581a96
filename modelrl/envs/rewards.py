"""Known reward and termination functions of (obs, action, next_obs), for planning through a learned model.

A learned dynamics model predicts the next observation; where the task's reward is a known
function of the transition, planning uses it instead of a learned reward (PETS does the same).
Each function is batched torch: ``reward(obs[B,S], action[B,A], next_obs[B,S]) -> [B]`` and
``terminal(next_obs[B,S]) -> bool[B]``. They are tested against the environments' own rewards.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

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


TASKS: dict[str, TaskFunctions] = {
    "Pendulum-v1": TaskFunctions(pendulum_reward),
    CARTPOLE_ID: TaskFunctions(cartpole_swingup_reward),
    "InvertedPendulum-v5": TaskFunctions(inverted_pendulum_reward, inverted_pendulum_terminal),
}


def register_task_functions(env_id: str, reward: RewardFn, terminal: TerminalFn | None = None) -> None:
    """Give a custom environment a known reward (and termination) for planning through learned models."""
    TASKS[env_id] = TaskFunctions(reward, terminal)


def task_functions(env_id: str | None) -> TaskFunctions | None:
    """The known reward (and termination) of ``env_id``, or None where the reward must be learned."""
    return TASKS.get(env_id) if env_id is not None else None
