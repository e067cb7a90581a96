"""Noise shared by the sampling planners: Gaussian with a covariance, and iCEM's colored noise."""
from __future__ import annotations

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


def gaussian_noise(shape: tuple[int, int, int], factor: Tensor, generator: torch.Generator) -> Tensor:
    """Samples ``[N, H, A]`` of N(0, L L^T) noise for a factor from ``noise_factor``."""
    eps = torch.randn(shape, generator=generator, dtype=factor.dtype, device=factor.device)
    return eps * factor if factor.ndim == 1 else eps @ factor.T


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
