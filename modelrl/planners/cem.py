"""The cross-entropy method, with the iCEM improvements as options."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from modelrl.planners.base import Planner
from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings, warm_start
from modelrl.types import Dynamics


class CEM(Planner):
    """CEM over action sequences: sample N(mu, sigma^2), refit mu and sigma to the top elites.

    Defaults are PETS's (Chua et al. 2018, Appendix A.7: 500 samples, 50 elites, 5 iterations,
    alpha = 0.1). iCEM (Pinneri et al. 2020) options: ``noise_beta`` (colored noise exponent),
    ``population_decay`` (N_i = N * decay^-i), ``keep_elites`` (fraction of elites carried to
    the next iteration and, shifted, to the next time step), ``add_mean`` (the mean is a
    candidate in the last iteration). ``CEM.icem(...)`` sets the iCEM paper's values.
    ``truncated`` samples as PETS does: a normal truncated at +-2 std whose variance shrinks near
    the bounds, instead of clamping a Gaussian (which piles candidates on the bounds).
    """

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        horizon: int = 15,  # ours: the horizon of the planner benchmark on Pendulum-v1
        num_samples: int = 500,  # PETS, Chua et al. 2018, App. A.7: popsize 500
        num_elites: int = 50,  # PETS: 50 elites
        iterations: int = 5,  # PETS: 5 CEM iterations
        momentum: float = 0.1,  # PETS: alpha = 0.1, weight of the previous mean/variance
        init_std: float | None = None,  # PETS: variance (range/4)^2, i.e. std = range / 4
        min_std: float = 1e-3,  # ours: keeps a little exploration; PETS stops at var < 1e-3 instead
        noise_beta: float = 0.0,  # 0 = white noise (CEM); iCEM uses 2.0-2.5 (Pinneri et al. 2020, Table S1)
        population_decay: float = 1.0,  # 1 = constant; iCEM gamma = 1.25
        keep_elites: float = 0.0,  # 0 = off; iCEM xi = 0.3
        add_mean: bool = False,  # iCEM adds the mean to the last iteration's candidates
        truncated: bool = False,  # PETS / mbrl-lib: truncated normal (+-2 std) inside the bounds; False: clamp
        **kwargs,
    ) -> None:
        super().__init__(dynamics, action_space, horizon, **kwargs)
        if not 1 <= num_elites <= num_samples:
            raise ValueError(f"need 1 <= num_elites <= num_samples, got {num_elites} elites of {num_samples}")
        if not 0.0 <= keep_elites <= 1.0:
            raise ValueError(f"keep_elites is a fraction in [0, 1], got {keep_elites}")
        self.settings = SamplingSettings(
            num_samples=int(num_samples), iterations=int(iterations), num_elites=int(num_elites), weighting="uniform",
            momentum=float(momentum), std_momentum=True, min_std=float(min_std), noise_beta=float(noise_beta),
            population_decay=float(population_decay), keep_elites=int(round(keep_elites * num_elites)),
            add_mean_last=bool(add_mean), truncated=bool(truncated))
        self.core = SamplingOptimizer(self.settings, self.low, self.high)
        self.num_samples, self.num_elites, self.iterations = int(num_samples), int(num_elites), int(iterations)
        self.momentum, self.min_std, self.noise_beta = momentum, min_std, noise_beta
        self.population_decay, self.keep_elites, self.add_mean = population_decay, keep_elites, add_mean
        span = self.high - self.low
        default_std = torch.where(torch.isfinite(span), span / 4.0, torch.ones_like(span))
        self.init_std = default_std if init_std is None else torch.full_like(span, float(init_std))
        self._kept: Tensor | None = None  # [H, B, keep, A]

    @classmethod
    def icem(cls, dynamics: Dynamics, action_space, horizon: int = 15, **kwargs) -> CEM:
        """CEM with the iCEM settings of Pinneri et al. 2020 (Table S1): beta 2.5, decay 1.25, xi 0.3."""
        opts: dict[str, Any] = dict(noise_beta=2.5, population_decay=1.25, keep_elites=0.3, add_mean=True,
                    num_samples=300, num_elites=10, iterations=3)
        opts.update(kwargs)
        return cls(dynamics, action_space, horizon, **opts)

    def reset(self) -> None:
        super().reset()
        self._kept = None

    def keep_rows(self, rows) -> None:
        super().keep_rows(rows)
        if self._kept is not None:
            self._kept = self._kept.index_select(1, torch.as_tensor(rows, dtype=torch.long, device=self.device))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "kept": None if self._kept is None else self._kept.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        kept = state["kept"]
        if kept is not None and kept.ndim == 3:  # checkpoints from before batched planning: [keep, H, A]
            kept = kept.transpose(0, 1).unsqueeze(1)
        self._kept = None if kept is None else kept.to(self.device, self.dtype)

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        kept = self._kept  # iCEM: elites of the previous time step, shifted by one
        if kept is not None and kept.shape[1] != init.shape[1]:
            kept = None  # the batch changed
        if kept is not None:
            kept = warm_start(kept, kept.shape[0], "last")
        out = self.core.optimize(lambda candidates, mean: self.returns(state, candidates), init,
                                 self.init_std.expand_as(init), self.generator, kept=kept)
        self._kept = out.kept
        # PETS executes the mean; iCEM the best sequence seen. With add_mean the best covers the mean.
        return out.best if self.add_mean else out.mean
