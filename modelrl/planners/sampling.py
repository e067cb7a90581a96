"""The sampling optimiser core every sampling planner is a setting of, and its noise: Gaussian with a
covariance, and iCEM's colored noise."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, overload

import numpy as np
import torch
from torch import Tensor


def noise_factor(noise_sigma, action_dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A factor L with L L^T = covariance, from a scalar std, a std per dimension or a covariance.

    Returns a vector [A] for diagonal noise (std per dimension) or a matrix [A, A] (Cholesky).
    """
    s = torch.as_tensor(np.asarray(noise_sigma, dtype=np.float64), dtype=dtype, device=device)
    if s.ndim == 0:
        s = s.expand(action_dim).clone()
    if s.ndim == 1:
        if s.shape[0] != action_dim:
            raise ValueError(f"noise std has {s.shape[0]} entries for {action_dim} action dimensions")
        if (s <= 0).any() or not torch.isfinite(s).all():
            raise ValueError(f"noise std must be positive and finite, got {s.tolist()}")
        return s
    if s.shape != (action_dim, action_dim):
        raise ValueError(f"noise covariance must be [{action_dim}, {action_dim}], got {tuple(s.shape)}")
    try:
        return torch.linalg.cholesky(s)
    except RuntimeError as err:
        raise ValueError("noise covariance must be symmetric positive definite") from err


def colored_noise(shape: tuple[int, int, int], beta: float, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Unit-variance Gaussian noise ``[N, H, A]`` whose power spectrum over time falls as 1/f^beta.

    beta = 0 is white noise; larger beta gives smoother action sequences (iCEM, Pinneri et al.
    2020, Sec. 3.1). Built in the frequency domain: random complex amplitudes scaled by
    f^(-beta/2), inverse real FFT along time, divided by the exact per-step standard deviation.
    """
    n, horizon, a = shape
    if beta == 0.0 or horizon == 1:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    freqs = torch.fft.rfftfreq(horizon, dtype=torch.float64)
    freqs[0] = freqs[1]  # the DC bin gets the scale of the lowest frequency instead of infinity
    scale = freqs ** (-beta / 2.0)
    nf = freqs.shape[0]
    re = torch.randn((n, a, nf), generator=generator, dtype=torch.float64, device=device)
    im = torch.randn((n, a, nf), generator=generator, dtype=torch.float64, device=device)
    im[..., 0] = 0.0
    weight = torch.full((nf,), 4.0, dtype=torch.float64)  # var contribution of bin k to each x_t
    weight[0] = 1.0
    if horizon % 2 == 0:  # the Nyquist bin is real
        im[..., -1] = 0.0
        weight[-1] = 1.0
    spec = torch.complex(re, im) * scale.to(device)
    x = torch.fft.irfft(spec, n=horizon, dim=-1)
    std = torch.sqrt((weight * scale**2).sum()) / horizon
    return (x / std.to(device)).transpose(1, 2).to(dtype)


_TWO_SIGMA_TAIL = 0.5 * math.erfc(2.0 / math.sqrt(2.0))  # P(Z < -2) for a standard normal Z


def truncated_unit_normal(shape, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                          device: torch.device | str = "cpu") -> Tensor:
    """Standard normal draws truncated to [-2, 2] (PETS's ``truncnorm(-2, 2)``), by the inverse CDF of uniform
    draws: one uniform per value, so the generator advances as ``torch.rand(shape)`` would."""
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    p = _TWO_SIGMA_TAIL + u * (1.0 - 2.0 * _TWO_SIGMA_TAIL)
    return (math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)).clamp_(-2.0, 2.0)


# -- the sampling optimiser core ----------------------------------------------------------------------
# Every sampling planner (random shooting, CEM/iCEM, MPPI) and TD-MPC's latent planner are settings of
# ``SamplingOptimizer``. Tensors are time-major: a plan is ``[H, B, A]`` (horizon, batch of problems,
# action), candidates ``[H, B, N, A]``, so each time step's actions are contiguous rows for the model.

@dataclasses.dataclass
class SamplingSettings:
    """What distinguishes the sampling planners; each field names the planner that uses it."""

    num_samples: int  # N candidates per iteration drawn from the sampling distribution
    iterations: int = 1  # J refits per plan (MPPI: 1; CEM: 5 in PETS; TD-MPC: 6)
    num_elites: int | None = None  # top-k candidates that refit the distribution; None: all
    weighting: str = "softmax"  # "softmax": w = exp((G - max G) / temperature) (MPPI, TD-MPC); "uniform" (CEM)
    temperature: float = 1.0  # lambda of the softmax weights
    momentum: float = 0.0  # weight of the previous mean in the refit (CEM alpha, TD-MPC momentum)
    std_momentum: bool = False  # CEM: the variance mixes with the previous one too; MPPI, TD-MPC: replaced
    refit_std: bool = True  # False: the noise stays as given (classic MPPI)
    min_std: float = 0.0  # floor of the refitted std (TD-MPC's epsilon; CEM keeps a little exploration)
    max_std: float = math.inf  # ceiling of the refitted std (TD-MPC: 2)
    include_mean: bool = False  # MPPI: candidate 0 is the unperturbed mean
    noise_beta: float = 0.0  # iCEM: colored noise with power spectrum 1/f^beta; 0 = white
    population_decay: float = 1.0  # iCEM: N_i = max(N * decay^-i, 2 k)
    keep_elites: int = 0  # iCEM: elites carried to the next iteration (and, shifted, to the next plan)
    add_mean_last: bool = False  # iCEM: the mean is a candidate in the last iteration
    uniform: bool = False  # random shooting: candidates uniform within the bounds, not around the mean
    truncated: bool = False
    """PETS (CEM): candidates from the Gaussian truncated at +-2 std, its variance first shrunk to
    min(var, ((mean - low) / 2)^2, ((high - mean) / 2)^2) so that no candidate leaves the bounds
    (handful-of-trials ``optimizers/cem.py``, mbrl-lib ``CEMOptimizer``); False: sample, then clamp."""
    noise_order: str = "sample"
    """Order the noise is drawn in: "sample" ([B, N, H, A]: MPPI, CEM and random shooting, as they have
    always drawn it, so seeded results stay as recorded) or "time" ([H, B, N, A]: TD-MPC's official order)."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.noise_order not in ("sample", "time"):
            raise ValueError(f"noise_order must be 'sample' or 'time', got {self.noise_order!r}")
        if self.weighting not in ("softmax", "uniform"):
            raise ValueError(f"weighting must be 'softmax' or 'uniform', got {self.weighting!r}")
        if not self.temperature > 0:  # also rejects NaN
            raise ValueError(f"temperature (lambda) must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.min_std <= self.max_std:
            raise ValueError(f"need 0 <= min_std <= max_std, got {self.min_std} and {self.max_std}")
        if not self.population_decay >= 1.0:
            raise ValueError(f"population_decay must be >= 1, got {self.population_decay}")
        if self.truncated and (self.noise_beta != 0.0 or self.uniform):
            raise ValueError("truncated sampling is for white Gaussian noise (not colored noise, not uniform)")


@dataclasses.dataclass
class SamplingResult:
    """The state of the sampling distribution after the last iteration."""

    mean: Tensor  # [H, B, A] refitted mean (with momentum)
    std: Tensor  # [H, B, A] refitted std (or the noise as given when it is not refitted)
    elites: Tensor  # [H, B, k, A] the last iteration's elites (best first when k < candidates)
    weights: Tensor  # [B, k] their weights (sum to 1)
    best: Tensor  # [H, B, A] the best candidate of any iteration
    kept: Tensor | None  # [H, B, keep, A] elites to carry to the next plan (iCEM)


class SamplingOptimizer:
    """Sample candidates, score them, refit a Gaussian to the elites; ``iterations`` times.

    ``objective(candidates[H, B, N, A], mean[H, B, A]) -> returns[B, N]`` scores the candidates
    (a model rollout, or TD-MPC's latent return with a terminal Q). ``std`` is a per-step std
    ``[H, B, A]`` or a Cholesky factor ``[A, A]`` of a noise covariance (MPPI before a refit).
    ``extra[H, B, M, A]`` are candidates scored in every iteration besides the sampled ones
    (TD-MPC's policy trajectories); ``kept`` are elites carried over from the previous plan.
    """

    def __init__(self, settings: SamplingSettings, low: Tensor, high: Tensor) -> None:
        s = settings
        if s.num_elites is not None and s.num_elites < 1:
            raise ValueError(f"num_elites must be >= 1, got {s.num_elites}")
        self.s, self.low, self.high = s, low, high

    def population(self, i: int) -> int:
        """Candidates sampled in iteration ``i`` (iCEM's decay; never fewer than twice the elites)."""
        s = self.s
        if s.population_decay == 1.0:
            return s.num_samples
        return max(int(s.num_samples * s.population_decay ** (-i)), 2 * (s.num_elites or 1))

    def sample(self, mean: Tensor, std: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """``n`` candidates per problem around ``mean[H, B, A]``, clamped to the bounds: ``[H, B, n, A]``."""
        s, (h, b, a) = self.s, mean.shape
        kw: dict[str, Any] = dict(generator=generator, dtype=mean.dtype, device=mean.device)
        if s.uniform:
            u = torch.rand((b, n, h, a), **kw).permute(2, 0, 1, 3) if s.noise_order == "sample" else \
                torch.rand((h, b, n, a), **kw)
            return self.low + u * (self.high - self.low)
        draw = truncated_unit_normal if s.truncated else torch.randn
        if s.noise_beta != 0.0:  # drawn sequence-major (the FFT runs along time), then laid out time-major
            eps = colored_noise((b * n, h, a), s.noise_beta, generator, mean.dtype, mean.device)
            eps = eps.transpose(0, 1).reshape(h, b, n, a)
        elif s.noise_order == "sample":
            eps = draw((b, n, h, a), **kw).permute(2, 0, 1, 3)
        else:
            eps = draw((h, b, n, a), **kw)
        if s.truncated:
            if std.ndim == 2:
                raise ValueError("truncated sampling needs a per-step std, not a covariance factor")
            room = torch.minimum(mean - self.low, self.high - mean).clamp_min(0.0) / 2.0  # 2 std fit inside
            std = torch.minimum(std, room)
        eps = eps @ std.T if std.ndim == 2 else eps * std.unsqueeze(2)
        if s.include_mean:
            eps[:, :, 0] = 0.0
        return torch.clamp(mean.unsqueeze(2) + eps, self.low, self.high)

    def optimize(self, objective, mean: Tensor, std: Tensor, generator: torch.Generator,
                 extra: Tensor | None = None, kept: Tensor | None = None) -> SamplingResult:
        s = self.s
        best = mean
        best_return = torch.full(mean.shape[1:2], -math.inf, dtype=mean.dtype, device=mean.device)
        for i in range(s.iterations):
            parts = [self.sample(mean, std, self.population(i), generator)]
            parts += [c for c in (extra, kept) if c is not None]
            if s.add_mean_last and i == s.iterations - 1:
                parts.append(mean.unsqueeze(2))
            candidates = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]  # [H, B, N', A]
            returns = objective(candidates, mean)  # [B, N']
            # a diverging model's NaN or inf scores as the worst (topk would rank NaN first); finite, so that
            # the weights stay defined when every candidate diverged
            returns = torch.where(torch.isfinite(returns), returns, torch.finfo(returns.dtype).min)
            k = candidates.shape[2] if s.num_elites is None else min(s.num_elites, candidates.shape[2])
            if k < candidates.shape[2]:
                returns, idx = torch.topk(returns, k, dim=1)  # best first
                elites = candidates.gather(2, idx[None, :, :, None].expand(mean.shape[0], -1, -1, mean.shape[2]))
            else:
                elites = candidates
            if s.weighting == "softmax":
                w = torch.softmax((returns - returns.max(1, keepdim=True).values) / s.temperature, dim=1)
                new_mean = torch.einsum("bk,hbka->hba", w, elites)
            else:
                w = torch.full_like(returns, 1.0 / k)
                new_mean = elites.mean(2)
            top, arg = returns.max(1)  # no host sync: the best is kept with torch.where
            better = top > best_return
            pick = elites.gather(2, arg[None, :, None, None].expand(mean.shape[0], -1, 1, mean.shape[2]))[:, :, 0]
            best = torch.where(better[None, :, None], pick, best)
            best_return = torch.where(better, top, best_return)
            if s.refit_std:
                if s.weighting == "softmax":
                    var = torch.einsum("bk,hbka->hba", w, (elites - new_mean.unsqueeze(2)) ** 2)
                else:
                    var = elites.var(2, unbiased=False)
                if s.std_momentum:
                    if std.ndim == 2:
                        raise ValueError("std_momentum needs a per-step std, not a covariance factor")
                    var = s.momentum * std**2 + (1 - s.momentum) * var
                std = var.sqrt().clamp(s.min_std, s.max_std)
            mean = s.momentum * mean + (1 - s.momentum) * new_mean
            if s.keep_elites > 0:
                kept = elites[:, :, : s.keep_elites]
        return SamplingResult(mean, std, elites, w, best, kept if s.keep_elites > 0 else None)


@overload
def warm_start(previous: Tensor, horizon: int, fill: str | Tensor) -> Tensor: ...
@overload
def warm_start(previous: None, horizon: int, fill: str | Tensor) -> None: ...
@overload
def warm_start(previous: Tensor | None, horizon: int, fill: str | Tensor) -> Tensor | None: ...
def warm_start(previous: Tensor | None, horizon: int, fill: str | Tensor) -> Tensor | None:
    """The previous plan ``[H', B, A]`` shifted one step to ``horizon`` steps; the freed steps take
    ``fill``: "last" (repeat the last action: MPPI, CEM) or a tensor ``[B, A]`` (TD-MPC: zeros)."""
    if previous is None:
        return None
    shifted = previous[1:horizon]
    missing = horizon - shifted.shape[0]
    if missing > 0:
        tail = previous[-1] if isinstance(fill, str) else fill
        shifted = torch.cat([shifted, tail.expand(missing, *tail.shape)], dim=0)
    return shifted
