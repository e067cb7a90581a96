"""The Planner interface and the rollout every sampling planner scores its candidates with."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from modelrl.device import compiled, generator_state, load_generator_state
from modelrl.planners.sampling import warm_start
from modelrl.types import Dynamics, NonFiniteError, as_tensor, fresh_seed, terminal_fn


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
    steps = actions.transpose(0, 1).unsqueeze(1)  # [H, 1, N, A]
    return batched_rollout_returns(dynamics, state.unsqueeze(0), steps, gamma, terminal_value)[0]


def batched_rollout_returns(
    dynamics: Dynamics,
    states: Tensor,
    actions: Tensor,
    gamma: float = 1.0,
    terminal_value: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``rollout_returns`` for B problems at once, time-major: ``states[B, S]``, ``actions[H, B, N, A]``
    -> ``returns[B, N]``. Rows are problem-major, then candidate, then particle."""
    horizon, b, n, a = actions.shape
    particles = int(getattr(dynamics, "particles", 1))
    steps = actions.repeat_interleave(particles, dim=2) if particles > 1 else actions
    rows = b * n * particles
    steps = steps.reshape(horizon, rows, a)  # each step's actions contiguous
    s = states.unsqueeze(1).expand(b, n * particles, states.shape[-1]).reshape(rows, -1)
    is_terminal = terminal_fn(dynamics)
    # Per-step work is the model's step and nothing else (eager torch pays ~3 us per op on 1000 rows,
    # so the planner's own ops are kept out of the loop): the rewards are summed once at the end.
    # The first step's output is checked against the Dynamics contract (once per rollout, see checked_step).
    first, *rest = steps.unbind(0)
    s, r = checked_step(dynamics, s, first)
    rewards = [r]
    alive = None if is_terminal is None else (~is_terminal(s)).to(r.dtype)
    for a_t in rest:
        s, r = dynamics.step(s, a_t)
        if alive is not None:
            r = r * alive
            alive = alive * (~is_terminal(s)).to(r.dtype)
        rewards.append(r)
    stacked = torch.stack(rewards, dim=0)  # [H, rows]
    if gamma == 1.0:
        total = stacked.sum(0)
    else:
        weights = gamma ** torch.arange(stacked.shape[0], dtype=stacked.dtype, device=stacked.device)
        total = weights @ stacked
    if terminal_value is not None:
        v = terminal_value(s)
        total = total + gamma**horizon * (v if alive is None else v * alive)
    total = total.view(b, n, particles)
    return total.mean(2) if particles > 1 else total[..., 0]


class DynamicsTypeError(TypeError, ValueError):
    """A model whose ``step`` returned something other than a pair of tensors. A TypeError, and a ValueError too:
    the command line reports it as bad input (a model of the user's), not as a bug of modelrl's."""


def checked_step(dynamics: Dynamics, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
    """``dynamics.step(state, action)`` with its output held to the ``Dynamics`` contract: a pair of tensors,
    ``next_state`` of the shape of ``state`` and one reward per row. Anything else is a ``DynamicsTypeError`` (not
    tensors) or a ValueError (a shape) naming the model, what it was given, what it returned and what was
    expected. Rollouts call it on their first step only: a few attribute look-ups per rollout, none per step."""
    out = dynamics.step(state, action)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        next_state, reward = out
        if isinstance(next_state, Tensor) and isinstance(reward, Tensor) and next_state.shape == state.shape \
                and reward.shape == state.shape[:1]:
            return next_state, reward
    raise _contract_error(dynamics, state, action, out)


def _contract_error(dynamics: Dynamics, state: Tensor, action: Tensor, out) -> Exception:
    """What is wrong with ``out``, the output of ``dynamics.step(state, action)`` (``checked_step``)."""
    call = f"{type(dynamics).__name__}.step(state{list(state.shape)}, action{list(action.shape)})"
    expected = {"next_state": list(state.shape), "reward": [state.shape[0]]}
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return DynamicsTypeError(f"{call} returned {_describe(out)}; expected a pair "
                                 f"(next_state{expected['next_state']}, reward{expected['reward']}) of torch tensors")
    for what, value in zip(expected, out):
        if not isinstance(value, Tensor):
            return DynamicsTypeError(f"{call} returned a {what} of type {_describe(value)}; expected a torch.Tensor "
                                     f"{expected[what]} (torch.as_tensor(x, dtype=state.dtype, device=state.device))")
        if list(value.shape) != expected[what]:
            hint = "the shape of the state it was given"
            if what == "reward":
                hint = "one reward per row" + (": reward.squeeze(-1) drops the last dimension" if value.ndim == 2
                                               else "; squeeze(-1), not squeeze(), keeps it for a batch of one"
                                               if value.ndim == 0 else "")
            return ValueError(f"{call} returned a {what} of shape {list(value.shape)}; expected {expected[what]} "
                              f"({hint})")
    raise AssertionError("checked_step found no fault")  # unreachable: called on a fault only


def _describe(value) -> str:
    """``numpy.ndarray of shape [1000, 3]``, ``float``, ...: a value's type, and its shape where it has one."""
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    shape = getattr(value, "shape", None)
    return f"{name} of shape {list(shape)}" if shape is not None else name


def non_finite_rollout_error(dynamics: Dynamics, states: Tensor, actions: Tensor, problem: int,
                             planner: str = "the planner") -> NonFiniteError:
    """The error for a plan none of whose candidates has a finite return, for problem ``problem`` of
    ``states[B, S]``, ``actions[H, B, N, A]``. The rollout of that problem is stepped again (this is the error
    path) to say where it went non-finite: at the first step already (a model broken at this state) or later (a
    rollout that diverges over the horizon)."""
    horizon, _, n, _ = actions.shape
    particles = int(getattr(dynamics, "particles", 1))
    steps = actions[:, problem].repeat_interleave(particles, dim=1) if particles > 1 else actions[:, problem]
    s = states[problem].expand(steps.shape[1], -1)
    first = torch.full((steps.shape[1],), horizon + 1)  # the step at which each row went non-finite
    what = ""
    for t, a_t in enumerate(steps.unbind(0)):
        s, r = dynamics.step(s, a_t)
        bad_state, bad_reward = ~torch.isfinite(s).all(-1).cpu(), ~torch.isfinite(r).cpu()
        if t == 0 and bool((bad_state | bad_reward).all()):
            what = "next state" if bool(bad_state.all()) else "reward" if bool(bad_reward.all()) else \
                "next state or reward"
        first = torch.where((bad_state | bad_reward) & (first > horizon), t + 1, first)
    name, start = type(dynamics).__name__, f"from state {states[problem].tolist()}"
    sequences = f"every one of the {n} candidate action sequences" if n > 1 else "the action sequence"
    if what:
        cause = (f"{name}.step returned a non-finite {what} (NaN or inf) for {sequences} at the first step, {start}: "
                 f"the model is broken at this state (NaN weights, a division by zero, an input far outside what it "
                 f"was fitted on)")
    elif bool((first <= horizon).all()):
        low, high = int(first.min()), int(first.max())
        when = f"between steps {low} and {high}" if low < high else f"at step {low}"
        cause = (f"the rollout of {sequences} through {name} {start} went NaN or inf {when} of {horizon}: the model "
                 f"diverges over the horizon (a shorter horizon, or a model that stays bounded)")
    else:
        cause = (f"the return of {sequences} through {name} {start} is NaN or inf, though the model's steps are "
                 f"finite (the terminal value, or overflow in the sum)")
    tolerated = " Some non-finite candidates are tolerated (they rank as the worst); with none finite there is " \
                "nothing to plan with." if n > 1 else ""
    return NonFiniteError(f"{planner}: {cause}.{tolerated}", what="model prediction")


class Planner(ABC):
    """Receding-horizon optimiser: ``plan(state) -> actions[H, A]``, ``act(state) -> action[A]``.

    A batch of states ``[B, S]`` plans B independent problems at once: ``plan`` returns
    ``[B, H, A]`` and ``act`` ``[B, A]``, each problem with its own warm start (lockstep evaluation,
    vector envs). Subclasses implement ``_optimize(states[B, S], init[H, B, A]) -> [H, B, A]``
    (``batched = False``: ``_optimize(state[S], init[H, A]) -> [H, A]``, called once per problem);
    this class validates the input, keeps the warm start (the previous plan shifted by one step)
    and the action bounds.
    """

    uses_autograd: bool = False
    """Gradient-based planners (iLQR) set True: they never plan under inference mode."""
    batched: bool = True
    """False: ``_optimize`` solves one problem at a time (iLQR, LQR); a batch is solved row by row."""

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        horizon: int,
        *,
        gamma: float = 1.0,
        terminal_value: Callable[[Tensor], Tensor] | None = None,
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
        self.terminal_value = terminal_value
        """``V(states[R, S]) -> [R]``: adds gamma^H V(s_H) to every sampled return (a learned value)."""
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
        self._warm: Tensor | None = None  # [H, B, A]
        self._last_plan: Tensor | None = None  # [H, B, A], the plan of the last call, before the shift
        # torch.compile of the rollout (opt-in): fuses the model's per-step ops into one kernel.
        # The first plan pays the compilation (tens of seconds on a laptop CPU, cached on disk).
        self._rollout = compiled(batched_rollout_returns, compile)

    # -- public API -------------------------------------------------------------------------
    def plan(self, state) -> Tensor:
        """Optimise action sequences from ``state[S]`` (-> ``[H, A]``) or ``states[B, S]`` (-> ``[B, H, A]``)."""
        s, single = self._check_state(state)
        if self._warm is not None and self._warm.shape[1] != s.shape[0]:
            raise ValueError(f"the planner holds warm starts for {self._warm.shape[1]} problems, got a batch of "
                             f"{s.shape[0]}; call reset() when the batch changes")
        init = self._warm if self._warm is not None else self.initial_plan(s.shape[0])
        # The clamp below, outside inference mode, returns an ordinary tensor either way.
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            if self.batched:
                actions = self._optimize(s, init)
            else:
                actions = torch.stack([self._optimize(s[i], init[:, i]) for i in range(s.shape[0])], dim=1)
        actions = self.clamp(actions)
        self._last_plan = actions
        self._warm = actions
        return actions[:, 0] if single else actions.transpose(0, 1)

    def act(self, state) -> np.ndarray:
        """Plan, return the first action (``[A]``, or ``[B, A]`` for a batch of states), and keep the
        rest (shifted) to warm-start the next call."""
        actions = self.plan(state)
        self._warm = self.shift(self._last_plan)  # type: ignore[arg-type]  # plan() set it
        first = actions[0] if actions.ndim == 2 else actions[:, 0]
        return first.detach().cpu().numpy()

    def reset(self) -> None:
        """Forget the warm start (call at the start of each episode)."""
        self._warm = None

    def keep_rows(self, rows) -> None:
        """Keep the warm starts of problems ``rows`` of the last batch only (finished episodes leave a lockstep
        batch); the next call plans ``len(rows)`` problems."""
        idx = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.device)
        if self._warm is not None:
            self._warm = self._warm.index_select(1, idx)
        if self._last_plan is not None:
            self._last_plan = self._last_plan.index_select(1, idx)

    def state_dict(self) -> dict:
        """Warm start and sampling RNG: what a checkpoint needs for the next plan to be identical."""
        return {"warm": None if self._warm is None else self._warm.clone(),
                "generator": generator_state(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        warm = state["warm"]
        if warm is not None and warm.ndim == 2:  # checkpoints from before batched planning: [H, A]
            warm = warm.unsqueeze(1)
        self._warm = None if warm is None else warm.to(self.device, self.dtype)
        load_generator_state(self.generator, state["generator"])

    # -- helpers for subclasses -------------------------------------------------------------
    @abstractmethod
    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        """Return improved plans ``[H, B, A]`` starting from ``init[H, B, A]`` for ``states[B, S]``."""

    def initial_plan(self, batch: int = 1) -> Tensor:
        """The plan ``[H, B, A]`` used with no warm start: zero where zero is allowed, else the bounds' midpoint."""
        zero = torch.zeros(self.action_dim, dtype=self.dtype, device=self.device)
        mid = torch.where(torch.isfinite(self.low + self.high), (self.low + self.high) / 2, zero)
        first = torch.where((self.low <= 0) & (self.high >= 0), zero, mid)
        return first.expand(self.horizon, batch, -1).clone()

    def shift(self, actions: Tensor) -> Tensor:
        """Warm start for the next step: drop the first action, repeat the last."""
        return warm_start(actions, actions.shape[0], "last")

    def clamp(self, actions: Tensor) -> Tensor:
        return torch.clamp(actions, self.low, self.high)

    def returns(self, states: Tensor, actions: Tensor) -> Tensor:
        """Discounted return ``[B, N]`` of ``actions[H, B, N, A]`` from ``states[B, S]`` through the
        planner's dynamics, plus gamma^H V(s_H) where the planner has a ``terminal_value``.

        Candidates whose return is NaN or inf are left so (the sampling core ranks them as the worst); a problem
        none of whose candidates has a finite return is a ``NonFiniteError`` that names the model and where the
        rollouts went non-finite. The check is one sum per rollout (any NaN or inf makes it non-finite; so may an
        overflow, which the closer look then clears), outside a compiled rollout."""
        total = self._rollout(self.dynamics, states, actions, self.gamma, self.terminal_value)
        if not math.isfinite(total.sum().item()):
            dead = torch.nonzero(~torch.isfinite(total).any(1)).flatten().tolist()
            if dead:
                raise non_finite_rollout_error(self.dynamics, states, actions, dead[0], type(self).__name__)
        return total

    def _check_state(self, state) -> tuple[Tensor, bool]:
        """``states[B, S]`` on the planner's device, and whether the caller gave one state ``[S]``."""
        if isinstance(state, np.ndarray) and state.ndim == 1 and np.isfinite(state).all() and (
                self.state_dim is None or state.shape[0] == self.state_dim):
            # the common case, checked in numpy
            return torch.as_tensor(state, dtype=self.dtype, device=self.device).unsqueeze(0), True
        s = as_tensor(state, dtype=self.dtype, device=self.device)
        if s.ndim not in (1, 2):
            raise ValueError(f"plan/act take one state [S] or a batch of states [B, S]; got shape {tuple(s.shape)}")
        if self.state_dim is not None and s.shape[-1] != self.state_dim:
            raise ValueError(f"state has {s.shape[-1]} entries, the dynamics expect {self.state_dim}")
        if not torch.isfinite(s).all():
            bad = torch.nonzero(~torch.isfinite(s)).tolist()
            raise ValueError(f"state contains NaN or inf at index {bad}: {s.tolist()}")
        return (s.unsqueeze(0), True) if s.ndim == 1 else (s, False)
