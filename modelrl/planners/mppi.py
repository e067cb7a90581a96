"""Model predictive path integral control (MPPI), batched over samples."""
from __future__ import annotations

import torch
from torch import Tensor

from modelrl.planners.base import Planner
from modelrl.planners.sampling import gaussian_noise, noise_factor
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
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if temperature <= 0:
            raise ValueError(f"temperature (lambda) must be > 0, got {temperature}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if num_elites is not None and not 1 <= num_elites <= num_samples:
            raise ValueError(f"need 1 <= num_elites <= num_samples, got {num_elites} of {num_samples}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_samples, self.temperature, self.iterations = int(num_samples), float(temperature), int(iterations)
        self.num_elites, self.momentum = num_elites, momentum
        self.update_std, self.min_std, self.include_mean = update_std, min_std, include_mean
        self.noise = noise_factor(noise_sigma, self.action_dim, self.dtype, self.device)
        self.control_cost = bool(control_cost)
        factor = self.noise if self.noise.ndim == 2 else torch.diag(self.noise)
        self._sigma_inv = torch.cholesky_inverse(factor)  # Sigma^-1 from its Cholesky factor

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        mean, std = init, None  # std [H, A] once refitted (update_std); before that the fixed noise
        shape = (self.num_samples, self.horizon, self.action_dim)
        for _ in range(self.iterations):
            if std is None:
                eps = gaussian_noise(shape, self.noise, self.generator)
            else:
                eps = std * torch.randn(shape, generator=self.generator, dtype=self.dtype, device=self.device)
            if self.include_mean:
                eps[0] = 0.0
            candidates = self.clamp(mean + eps)
            returns = self.returns(state, candidates)
            if self.control_cost:  # return -= lambda * sum_t mean_t^T Sigma^-1 (clamped eps)_t
                gain = (mean @ self._sigma_inv).reshape(-1)
                returns = returns - self.temperature * ((candidates - mean).reshape(shape[0], -1) @ gain)
            if self.num_elites is not None and self.num_elites < self.num_samples:
                returns, idx = torch.topk(returns, self.num_elites)
                candidates = candidates[idx]
            w = torch.softmax((returns - returns.max()) / self.temperature, dim=0)
            new_mean = (w @ candidates.reshape(w.shape[0], -1)).view_as(mean)
            if self.update_std:
                var = torch.einsum("n,nha->ha", w, (candidates - new_mean) ** 2)
                std = var.sqrt().clamp_min(self.min_std)
            mean = self.momentum * mean + (1 - self.momentum) * new_mean
        return mean
