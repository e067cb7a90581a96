"""The Planner interface and the rollout every sampling planner scores its candidates with."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from modelrl.types import Dynamics, as_tensor, fresh_seed, terminal_fn


def action_bounds(action_space) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) from a gymnasium Box or a (low, high) pair; raises on inverted bounds."""
    if hasattr(action_space, "low") and hasattr(action_space, "high"):
        low, high = action_space.low, action_space.high
    else:
        try:
            low, high = action_space
        except (TypeError, ValueError):
            raise TypeError(
                f"action_space must be a gymnasium Box or a (low, high) pair, got {action_space!r}"
            ) from None
    low = np.atleast_1d(np.asarray(low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(high, dtype=np.float64))
    if low.shape != high.shape or low.ndim != 1:
        raise ValueError(f"action bounds must be two vectors of one shape, got {low.shape} and {high.shape}")
    if np.any(np.isnan(low)) or np.any(np.isnan(high)):
        raise ValueError("action bounds contain NaN")
    if np.any(low > high):
        bad = np.flatnonzero(low > high).tolist()
        raise ValueError(f"action bounds inverted (low > high) in dimension(s) {bad}: low={low}, high={high}")
    return low, high


def rollout_returns(
    dynamics: Dynamics,
    state: Tensor,
    actions: Tensor,
    gamma: float = 1.0,
    terminal_value: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Discounted return of each action sequence ``actions[N, H, A]`` from ``state[S]``.

    All N sequences step together; the loop runs over the H time steps only. Rewards after a
    terminal state are dropped. ``terminal_value(states[N, S]) -> [N]`` adds gamma^H V(s_H).
    A stochastic model with ``particles = P > 1`` (e.g. an ensemble with TS-inf propagation)
    gets N*P rows, candidate-major (row = n*P + p), and the return is the mean over particles.
    """
    n, horizon, _ = actions.shape
    particles = int(getattr(dynamics, "particles", 1))
    steps = actions.transpose(0, 1)  # [H, N, A]: each step's actions contiguous once copied
    steps = steps.repeat_interleave(particles, dim=1) if particles > 1 else steps.contiguous()
    rows = n * particles
    s = state.unsqueeze(0).expand(rows, -1)
    is_terminal = terminal_fn(dynamics)
    # Per-step work is the model's step and nothing else (eager torch pays ~3 us per op on 1000 rows,
    # so the planner's own ops are kept out of the loop): the rewards are summed once at the end.
    rewards = []
    alive = None
    for a_t in steps.unbind(0):
        s, r = dynamics.step(s, a_t)
        if alive is not None:
            r = r * alive
        rewards.append(r)
        if is_terminal is not None:
            live = (~is_terminal(s)).to(r.dtype)
            alive = live if alive is None else alive * live
    stacked = torch.stack(rewards, dim=0)  # [H, rows]
    if gamma == 1.0:
        total = stacked.sum(0)
    else:
        weights = gamma ** torch.arange(stacked.shape[0], dtype=stacked.dtype, device=stacked.device)
        total = weights @ stacked
    if terminal_value is not None:
        v = terminal_value(s)
        total = total + gamma**horizon * (v if alive is None else v * alive)
    return total.view(n, particles).mean(1) if particles > 1 else total


class Planner(ABC):
    """Receding-horizon optimiser: ``plan(state) -> actions[H, A]``, ``act(state) -> action[A]``.

    Subclasses implement ``_optimize(state, init) -> actions[H, A]``; this class validates the
    input, keeps the warm start (the previous plan shifted by one step) and the action bounds.
    """

    uses_autograd: bool = False
    """Gradient-based planners (iLQR) set True: they never plan under inference mode."""

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        horizon: int,
        *,
        gamma: float = 1.0,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        state_dim: int | None = None,
        compile: bool = False,
        inference_mode: bool = False,
    ) -> None:
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        low, high = action_bounds(action_space)
        self.dynamics = dynamics
        self.horizon = int(horizon)
        self.gamma = float(gamma)
        self.device = torch.device(device)
        self.dtype = dtype
        # Opt-in: torch.inference_mode drops autograd's per-op bookkeeping (about 15% of an eager
        # pendulum rollout here), but a tensor a model creates and caches inside it (a lazily built
        # buffer) can never enter autograd afterwards, so the default is torch.no_grad.
        self.inference_mode = bool(inference_mode) and not self.uses_autograd
        self.low = torch.as_tensor(low, dtype=dtype, device=self.device)
        self.high = torch.as_tensor(high, dtype=dtype, device=self.device)
        self.action_dim = int(low.shape[0])
        self.state_dim = state_dim if state_dim is not None else getattr(dynamics, "state_dim", None)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(fresh_seed(seed))
        self._warm: Tensor | None = None
        self._last_plan: Tensor | None = None  # the plan of the last call, before the shift
        # torch.compile of the rollout (opt-in): fuses the model's per-step ops into one kernel.
        # The first plan pays the compilation (tens of seconds on a laptop CPU, cached on disk).
        self._rollout = rollout_returns
        if compile:
            self._rollout = torch.compile(rollout_returns, dynamic=False)

    # -- public API -------------------------------------------------------------------------
    def plan(self, state) -> Tensor:
        """Optimise an action sequence from ``state``; returns ``actions[H, A]`` within bounds."""
        s = self._check_state(state)
        init = self._warm if self._warm is not None else self.initial_plan()
        # The clamp below, outside inference mode, returns an ordinary tensor either way.
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            actions = self._optimize(s, init)
        actions = self.clamp(actions)
        self._last_plan = actions
        self._warm = actions
        return actions

    def act(self, state) -> np.ndarray:
        """Plan, return the first action, and keep the rest (shifted) to warm-start the next call."""
        actions = self.plan(state)
        self._warm = self.shift(actions)
        return actions[0].detach().cpu().numpy()

    def reset(self) -> None:
        """Forget the warm start (call at the start of each episode)."""
        self._warm = None

    def state_dict(self) -> dict:
        """Warm start and sampling RNG: what a checkpoint needs for the next plan to be identical."""
        return {"warm": None if self._warm is None else self._warm.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._warm = None if state["warm"] is None else state["warm"].to(self.device, self.dtype)
        self.generator.set_state(state["generator"])

    # -- helpers for subclasses -------------------------------------------------------------
    @abstractmethod
    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        """Return an improved plan ``[H, A]`` starting from ``init``."""

    def initial_plan(self) -> Tensor:
        """The plan used with no warm start: zero where zero is allowed, else the bounds' midpoint."""
        zero = torch.zeros(self.action_dim, dtype=self.dtype, device=self.device)
        mid = torch.where(torch.isfinite(self.low + self.high), (self.low + self.high) / 2, zero)
        first = torch.where((self.low <= 0) & (self.high >= 0), zero, mid)
        return first.expand(self.horizon, -1).clone()

    def shift(self, actions: Tensor) -> Tensor:
        """Warm start for the next step: drop the first action, repeat the last."""
        return torch.cat([actions[1:], actions[-1:]], dim=0)

    def clamp(self, actions: Tensor) -> Tensor:
        return torch.clamp(actions, self.low, self.high)

    def returns(self, state: Tensor, actions: Tensor) -> Tensor:
        """Discounted return of each of ``actions[N, H, A]`` through the planner's dynamics."""
        return self._rollout(self.dynamics, state, actions, self.gamma)

    def _check_state(self, state) -> Tensor:
        if isinstance(state, np.ndarray) and state.ndim == 1 and np.isfinite(state).all() and (
                self.state_dim is None or state.shape[0] == self.state_dim):
            return torch.as_tensor(state, dtype=self.dtype, device=self.device)  # the common case, checked in numpy
        s = as_tensor(state, dtype=self.dtype, device=self.device)
        if s.ndim != 1:
            raise ValueError(
                f"plan/act take one state as a vector [S]; got shape {tuple(s.shape)}"
                + (" (drop the batch dimension)" if s.ndim == 2 and s.shape[0] == 1 else "")
            )
        if self.state_dim is not None and s.shape[0] != self.state_dim:
            raise ValueError(f"state has {s.shape[0]} entries, the dynamics expect {self.state_dim}")
        if not torch.isfinite(s).all():
            bad = torch.nonzero(~torch.isfinite(s)).flatten().tolist()
            raise ValueError(f"state contains NaN or inf at index {bad}: {s.tolist()}")
        return s
