"""Known dynamics in torch, written to match the simulators step for step.

Every model here implements the ``Dynamics`` protocol on *normalised* actions in [-1, 1] (the
action space ``make_env`` exposes) and on the flat observation vectors ``make_env`` returns,
so a planner given ``true_dynamics(env_id)`` plans on exactly the task the env runs.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from modelrl.types import did_you_mean


class PendulumDynamics:
    """Gymnasium's Pendulum-v1: obs (cos th, sin th, thdot), torque = 2 * action.

    Same equations and constants as ``gymnasium.envs.classic_control.PendulumEnv``
    (g = 10, m = l = 1, dt = 0.05, |thdot| <= 8, |u| <= 2); the reward is computed from the
    state before the step, as the env does.
    """

    state_dim = 3
    action_dim = 1
    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05

    # g, m, l: the names of gymnasium's PendulumEnv, whose attributes these mirror
    def __init__(self, g: float = 10.0, m: float = 1.0, l: float = 1.0) -> None:  # noqa: E741
        self.g, self.m, self.l = g, m, l

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        # Written for few torch ops (planners call this H times per plan and the op count is the
        # time): constants folded, fused multiply-adds. Same maths as the env, term by term:
        # u = 2a; cost = th^2 + 0.1 thdot^2 + 0.001 u^2; thdot' = thdot + (3g/2l sin th + 3/(ml^2) u) dt.
        cos_th, sin_th, thdot = state.unbind(-1)
        th = torch.atan2(sin_th, cos_th)  # in [-pi, pi]: already the env's angle_normalize
        a = action[:, 0].clamp(-1.0, 1.0)
        cost = torch.addcmul(torch.addcmul(th * th, thdot, thdot, value=0.1), a, a, value=0.001 * self.max_torque**2)
        return self._advance(th, sin_th, thdot, a), cost.neg_()

    def transition(self, state: Tensor, action: Tensor) -> Tensor:
        """The next state alone (no reward): what a step-function-only planner library takes."""
        cos_th, sin_th, thdot = state.unbind(-1)
        return self._advance(torch.atan2(sin_th, cos_th), sin_th, thdot, action[:, 0].clamp(-1.0, 1.0))

    def _advance(self, th: Tensor, sin_th: Tensor, thdot: Tensor, a: Tensor) -> Tensor:
        gain_sin = 3.0 * self.g / (2.0 * self.l) * self.dt
        gain_u = 3.0 / (self.m * self.l**2) * self.max_torque * self.dt
        new_thdot = torch.add(torch.add(thdot, sin_th, alpha=gain_sin), a, alpha=gain_u)
        new_thdot = new_thdot.clamp(-self.max_speed, self.max_speed)
        new_th = torch.add(th, new_thdot, alpha=self.dt)
        # Stacked feature-first and transposed: a column-major [B, 3] view whose columns are
        # contiguous, so the next step's unbind gives contiguous vectors (strided atan2 is ~4x slower).
        return torch.stack([torch.cos(new_th), torch.sin(new_th), new_thdot], dim=0).T


class LinearDynamics:
    """x' = A x + B u with reward -(x'Qx + u'Ru) on the state before the step.

    Unbounded actions (no normalisation); the matrices follow the dtype and device of the
    state they are applied to, so the same object serves float32 planners and float64 checks.
    """

    def __init__(self, A, B, Q, R) -> None:
        A, B, Q, R = (np.atleast_2d(np.asarray(m, dtype=np.float64)) for m in (A, B, Q, R))
        n, m = B.shape
        if A.shape != (n, n) or Q.shape != (n, n) or R.shape != (m, m):
            raise ValueError(
                "LinearDynamics needs A[n,n], B[n,m], Q[n,n], R[m,m]; "
                f"got A{A.shape}, B{B.shape}, Q{Q.shape}, R{R.shape}"
            )
        self.A, self.B, self.Q, self.R = A, B, Q, R
        self.state_dim, self.action_dim = n, m
        self._cache: dict = {}

    def _mats(self, like: Tensor) -> tuple[Tensor, ...]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                torch.as_tensor(m, dtype=like.dtype, device=like.device) for m in (self.A, self.B, self.Q, self.R)
            )
        return self._cache[key]

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        A, B, Q, R = self._mats(state)
        next_state = state @ A.T + action @ B.T
        reward = -((state @ Q) * state).sum(-1) - ((action @ R) * action).sum(-1)
        return next_state, reward


_REGISTRY: dict[str, Callable[[], object]] = {
    "Pendulum-v1": PendulumDynamics,
}


def register_true_dynamics(env_id: str, factory: Callable[[], object]) -> None:
    """Make ``true_dynamics(env_id)`` return ``factory()`` (for custom environments)."""
    _REGISTRY[env_id] = factory


def true_dynamics(env_id: str):
    """The known torch model of ``env_id`` (normalised actions, flat observations)."""
    if env_id not in _REGISTRY:
        hint = did_you_mean(env_id, list(_REGISTRY))
        raise ValueError(
            f"No true dynamics for {env_id!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}. "
            "Use a learned model, or register_true_dynamics(env_id, factory)."
        )
    return _REGISTRY[env_id]()


