"""Random shooting: sample action sequences uniformly within the bounds, keep the best."""
from __future__ import annotations

import torch
from torch import Tensor

from modelrl.planners.base import Planner
from modelrl.types import Dynamics


class RandomShooting(Planner):
    """Best of ``num_samples`` uniform sequences (plus the warm start, so it never gets worse).

    The simplest MPC optimiser of the notes (Nagabandi et al. 2018 used it with a learned model).
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
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all()):
            raise ValueError("RandomShooting samples uniformly within the action bounds, which must be finite")
        self.num_samples = int(num_samples)

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        u = torch.rand((self.num_samples, self.horizon, self.action_dim), generator=self.generator,
                       dtype=self.dtype, device=self.device)
        candidates = self.low + u * (self.high - self.low)
        candidates[0] = init
        returns = self.returns(state, candidates)
        return candidates[torch.argmax(returns)]
