"""A learned model as a ``Dynamics``: what planners roll out, with PETS propagation modes."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from modelrl.models.ensemble import EnsembleModel
from modelrl.types import as_tensor, fresh_seed

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (obs[B,S], action[B,A], next_obs[B,S]) -> [B]
TerminationFn = Callable[[Tensor], Tensor]  # next_obs[B,S] -> bool[B]

MODES = ("ts1", "ts_inf", "mean")


class LearnedDynamics:
    """``step(state[B, S], action[B, A]) -> (next_state, reward)`` through an ``EnsembleModel``.

    Propagation (PETS, Chua et al. 2018, Sec. 4.2), always over the elite members:
    - ``"ts1"``: every row draws a random elite each step and samples from its Gaussian;
    - ``"ts_inf"``: row i keeps elite ``(i % particles) % num_elites`` for the whole rollout and
      samples from its Gaussian (rows are candidate-major, row = n * particles + p);
    - ``"mean"``: the average of the elites' means, no sampling (deterministic).
    ``particles`` tells ``rollout_returns`` how many rows to roll out per candidate.

    The reward is ``reward_fn(obs, action, next_obs)`` when given, else the model's reward
    head. ``terminal`` exists only with a ``termination_fn(next_obs)`` or a termination head.
    """

    def __init__(
        self,
        model: EnsembleModel,
        reward_fn: RewardFn | None = None,
        termination_fn: TerminationFn | None = None,
        mode: str = "ts1",  # mbrl-lib gaussian_mlp_ensemble.yaml: propagation_method random_model (= TS1)
        particles: int | None = None,  # None: 20 for sampling modes (PETS P = 20; mbrl-lib num_particles), 1 for mean
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown propagation mode {mode!r}; choose from {', '.join(MODES)}")
        if reward_fn is None and not model.learn_reward:
            raise ValueError("LearnedDynamics needs a reward: pass reward_fn or use a model with learn_reward=True")
        if particles is None:
            particles = 1 if mode == "mean" else 20
        if particles < 1:
            raise ValueError(f"particles must be >= 1, got {particles}")
        self.model = model
        self.reward_fn = reward_fn
        self.mode = mode
        self.particles = int(particles)
        self.state_dim, self.action_dim = model.obs_dim, model.action_dim
        self.generator = torch.Generator(device=model.device)
        self.seed(seed)
        self._last: tuple[Tensor, Tensor] | None = None  # (next_state, terminated) of the last step
        if termination_fn is not None:
            self.terminal = termination_fn
        elif model.learn_termination:
            self.terminal = self._learned_terminal

    def seed(self, seed: int | None) -> None:
        """Reseed the generator behind TS1 member choice and Gaussian sampling."""
        self.generator.manual_seed(fresh_seed(seed))

    def _member_idx(self, rows: int) -> Tensor | None:
        elites = self.model.elite_idx
        if self.mode == "mean":
            return None
        if self.mode == "ts1":
            pick = torch.randint(elites.numel(), (rows,), generator=self.generator, device=elites.device)
        else:
            pick = (torch.arange(rows, device=elites.device) % self.particles) % elites.numel()
        return elites[pick]

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """One model step for every row; returns ``(next_state[B, S], reward[B])``.

        Differentiable (no ``no_grad`` here; planners disable gradients themselves), so iLQR
        can plan through the model in ``"mean"`` mode.
        """
        model = self.model
        state = as_tensor(state, device=model.device)
        action = as_tensor(action, device=model.device)
        # TS-inf with particles a multiple of the elites: row i's member is elite i % num_elites, a fixed
        # stride the model runs without gathering rows (no sort, no device sync); same numbers as member_idx
        periodic = self.mode == "ts_inf" and self.particles % model.num_elites == 0
        pred = model.predict(state, action, None if periodic else self._member_idx(state.shape[0]),
                             sample=self.mode != "mean", generator=self.generator, periodic=periodic)
        reward = self.reward_fn(state, action, pred.next_obs) if self.reward_fn is not None else pred.reward
        if pred.terminated is not None:
            self._last = (pred.next_obs, pred.terminated)
        return pred.next_obs, reward  # type: ignore[return-value]  # no reward_fn: __init__ required a reward head

    def _learned_terminal(self, state: Tensor) -> Tensor:
        """The termination head's verdict on the transition that produced ``state`` (the head
        predicts from (s, a), so it answers for the state ``step`` just returned)."""
        if self._last is None or state is not self._last[0]:
            raise ValueError(
                "the learned termination head judges transitions: call terminal() on the state "
                "that step() just returned"
            )
        return self._last[1]
