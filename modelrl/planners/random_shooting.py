"""Random shooting: sample action sequences uniformly within the bounds, keep the best."""
from __future__ import annotations

import torch
from torch import Tensor

from modelrl.planners.base import Planner
from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings
from modelrl.types import Dynamics


class RandomShooting(Planner):
    """Best of ``num_samples`` uniform sequences (plus the warm start, so it never gets worse).

    The simplest MPC optimiser (Nagabandi et al. 2018 used it with a learned model).
    """

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        horizon: int = 15,  # ours: the horizon of the planner benchmark on Pendulum-v1
        num_samples: int = 1000,  # Nagabandi et al. 2018 (Sec. 4) used K = 1000 candidate sequences
        **kwargs,
    ) -> None:
        super().__init__(dynamics, action_space, horizon, **kwargs)
        if not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all()):
            raise ValueError("RandomShooting samples uniformly within the action bounds, which must be finite")
        self.num_samples = int(num_samples)
        self.core = SamplingOptimizer(SamplingSettings(num_samples=self.num_samples, uniform=True, num_elites=1,
                                                       refit_std=False), self.low, self.high)

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        # one iteration, the best candidate; the warm start rides along so the plan never gets worse
        out = self.core.optimize(lambda candidates, mean: self.returns(state, candidates), init,
                                 torch.ones_like(init), self.generator, extra=init.unsqueeze(2))
        return out.best
