"""Model predictive path integral control (MPPI), batched over samples."""
from __future__ import annotations

import torch
from torch import Tensor

from modelrl.planners.base import Planner
from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings, noise_factor
from modelrl.types import Dynamics


class MPPI(Planner):
    """MPPI: perturb the mean plan with Gaussian noise, average the samples weighted by
    w_i = exp(-S_i / lambda) / sum_j exp(-S_j / lambda), S = -return (Williams et al. 2017).

    The weights are a softmax of return / lambda, computed after subtracting the best return,
    so no exponential overflows. Options used by TD-MPC (Hansen et al. 2022, Sec. 3.2):
    ``num_elites`` (weight only the top-k), ``iterations``, ``update_std`` with a floor
    ``min_std``, ``momentum`` on the mean. With the defaults it is classic one-iteration MPPI.

    ``control_cost=True`` adds the information-theoretic control cost of Williams et al. (2017,
    "Information theoretic MPC for model-based reinforcement learning", Sec. III-C):
    S_i += lambda * sum_t u_t^T Sigma^-1 eps_(i,t), with u the current mean and eps the sample's
    perturbation after clamping (as pytorch-mppi computes it). It pulls the update towards
    perturbations that shrink the mean's magnitude; off by default (the PETS / TD-MPC variants
    have no such term).
    """

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        horizon: int = 15,  # ours: the horizon of the planner benchmark on Pendulum-v1
        num_samples: int = 1000,  # ours: same samples as the pytorch_mppi pendulum benchmark
        temperature: float = 1.0,  # lambda; ours, tuned on Pendulum-v1 (returns of order 10-100 over 15 steps)
        noise_sigma=0.5,  # std (scalar or per dim) or covariance [A, A]; ours, a quarter of the [-1, 1] range
        iterations: int = 1,  # classic MPPI: one update per control step (Williams et al. 2017)
        num_elites: int | None = None,  # None = all samples; TD-MPC: 64 of 512
        momentum: float = 0.0,  # weight of the previous mean; TD-MPC: 0.1
        update_std: bool = False,  # TD-MPC refits sigma to the weighted elites
        min_std: float = 0.05,  # TD-MPC's sigma floor epsilon (its schedule ends at 0.05)
        include_mean: bool = True,  # ours: the unperturbed warm start is one of the samples
        control_cost: bool = False,  # Williams et al. 2017's lambda u^T Sigma^-1 eps term (see above)
        **kwargs,
    ) -> None:
        super().__init__(dynamics, action_space, horizon, **kwargs)
        if num_elites is not None and not 1 <= num_elites <= num_samples:
            raise ValueError(f"need 1 <= num_elites <= num_samples, got {num_elites} of {num_samples}")
        self.settings = SamplingSettings(
            num_samples=int(num_samples), iterations=int(iterations), num_elites=num_elites, weighting="softmax",
            temperature=float(temperature), momentum=float(momentum), refit_std=bool(update_std),
            min_std=float(min_std), include_mean=bool(include_mean))
        self.core = SamplingOptimizer(self.settings, self.low, self.high)
        self.num_samples, self.temperature, self.iterations = int(num_samples), float(temperature), int(iterations)
        self.num_elites, self.momentum = num_elites, momentum
        self.update_std, self.min_std, self.include_mean = update_std, min_std, include_mean
        self.noise = noise_factor(noise_sigma, self.action_dim, self.dtype, self.device)
        self.control_cost = bool(control_cost)
        factor = self.noise if self.noise.ndim == 2 else torch.diag(self.noise)
        self._sigma_inv = torch.cholesky_inverse(factor)  # Sigma^-1 from its Cholesky factor

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        # the first iteration samples the given noise (a std per dimension, or a covariance factor)
        std = self.noise if self.noise.ndim == 2 else self.noise.expand_as(init)

        def objective(candidates: Tensor, mean: Tensor) -> Tensor:
            returns = self.returns(state, candidates)
            if self.control_cost:  # return -= lambda * sum_t mean_t^T Sigma^-1 (clamped eps)_t
                gain = mean @ self._sigma_inv  # [H, B, A]
                returns = returns - self.temperature * torch.einsum(
                    "hbna,hba->bn", candidates - mean.unsqueeze(2), gain)
            return returns

        return self.core.optimize(objective, init, std, self.generator).mean
