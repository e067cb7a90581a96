"""Per-feature standardisation, stored as buffers so it travels in the model's state_dict."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """``(x - mean) / std`` per feature, fitted on training data.

    A feature whose standard deviation is below ``min_std`` is centred but not scaled (std
    set to 1): dividing by a near-zero std would turn any later deviation of a constant
    feature (e.g. a joint that never moved in the data) into a huge network input. The PETS
    reference code does the same with a 1e-12 threshold; we use 1e-6 (ours), about the
    resolution of float32 relative to values of order 1, below which a spread is noise.
    Unfitted, it is the identity.
    """

    mean: Tensor  # buffers (register_buffer)
    std: Tensor

    def __init__(self, dim: int, min_std: float = 1e-6) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"Normalizer needs dim >= 1, got {dim}")
        self.dim = int(dim)
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set mean and std from ``x[N, dim]`` (statistics computed in float64)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"Normalizer.fit expects [N, {self.dim}], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("Normalizer.fit needs at least one row")
        x64 = x.detach().to(torch.float64)
        mean = x64.mean(0)
        std = x64.std(0, correction=0)
        std = torch.where(std < self.min_std, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def normalize(self, x: Tensor) -> Tensor:
        """Standardise ``x[..., dim]``."""
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        """Inverse of ``normalize``."""
        return torch.addcmul(self.mean, x, self.std)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, min_std={self.min_std}"
