"""Ensemble layers: E networks of one shape evaluated together, one batched matmul per layer.

``EnsembleLinear`` holds E linear maps as one weight ``[E, in, out]`` and one bias ``[E, 1, out]``;
``EnsembleMLP`` stacks them with activations, optional per-member LayerNorm and dropout. An input
``x[E, B, in]`` gives every member its own rows; ``x[B, in]`` is read by all members (a broadcast
matmul). The layout, ``[in, out]`` weights so that ``x @ w`` needs no transpose and a bias row
broadcast over the batch, is the usual one (mbrl-lib's ``EnsembleLinearLayer``; TD-MPC2's
``layers.Ensemble`` gets the same batching by vmapping copies of one network).

Built on it: SAC's twin critics (``modelrl.agents.sac.TwinQ``), TD-MPC's fused heads
(``modelrl.models.told.HeadsMLP``) and the dynamics ensemble (``modelrl.models.ensemble.EnsembleModel``).
Each initialises its weights as its algorithm's source does; the layers' own ``reset_parameters`` is
PyTorch's ``nn.Linear`` default. Built, they hold zeros: building draws nothing from torch's global
generator, which dropout draws from.

Two options choose between ops that compute the same sums but round differently, so that each user
keeps the numbers (and the speed) it had: ``bias_in_matmul`` (``baddbmm`` or ``bmm`` then ``+ bias``;
SAC's critics measured ``bmm`` faster on the CPU) and ``norm_addcmul`` (the LayerNorm affine as one
``addcmul`` or as ``* weight + bias``).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Mish(torch.autograd.Function):
    """Mish through sigmoid: tanh(log(1 + e^x)) = (1 - s^2) / (1 + s^2) with s = sigmoid(-x), so
    mish(x) = x (1 - s^2) / (1 + s^2) and mish'(x) = t + x (1 - t^2) (1 - s), t = tanh(softplus(x))."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]  # autograd.Function's own signature
        s = torch.sigmoid(-x)
        u = s * s
        t = torch.neg(u).add_(1.0).div_(u.add_(1.0))
        ctx.save_for_backward(x, s, t)
        return x * t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, s, t = ctx.saved_tensors
        return torch.mul(t, t).neg_().add_(1.0).mul_(x).mul_(torch.neg(s).add_(1.0)).add_(t).mul_(grad)


def mish(x: Tensor) -> Tensor:
    """Mish, x tanh(softplus(x)) (TD-MPC2's activation), computed through one sigmoid (``_Mish``): the same function
    and gradient as ``F.mish`` within 1e-6, 2.5x faster forward and 3x faster forward plus backward on this CPU,
    whose tanh and softplus are slow (measured: docs/tdmpc2.md, "Speed")."""
    return _Mish.apply(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu, "elu": F.elu, "tanh": torch.tanh, "mish": mish, "silu": F.silu, "swish": F.silu}


def uniform_fan_in_(t: Tensor, fan_in: int, generator: torch.Generator | None = None) -> None:
    """PyTorch's ``nn.Linear`` default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():  # drawn on the CPU generator, so a seed gives the same weights on every device
        t.copy_(torch.empty(t.shape).uniform_(-bound, bound, generator=generator))


def ensemble_linear(x: Tensor, weight: Tensor, bias: Tensor, bias_in_matmul: bool = True) -> Tensor:
    """``x @ weight + bias`` per member: ``x[E, B, in]`` (own rows) or ``x[B, in]`` (shared) -> ``[E, B, out]``."""
    if x.ndim == 2:
        return torch.matmul(x, weight) + bias
    return torch.baddbmm(bias, x, weight) if bias_in_matmul else torch.bmm(x, weight) + bias


def ensemble_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, addcmul: bool = True,
                        shape: tuple[int] | None = None) -> Tensor:
    """LayerNorm over the last dimension (``shape``: ``(dim,)``, when known), then each member's affine
    (``weight``, ``bias`` ``[E, 1, dim]``)."""
    h = F.layer_norm(x, x.shape[-1:] if shape is None else shape)
    return torch.addcmul(bias, h, weight) if addcmul else h * weight + bias


def _pick(module: EnsembleLinear | EnsembleLayerNorm, members: Tensor | None, params: Sequence[Tensor] | None = None,
          at: int = 0) -> tuple[Tensor, Tensor]:
    """``module``'s weight and bias (or ``params[at]`` and ``params[at + 1]`` in their place), of ``members`` only."""
    w, b = (module.weight, module.bias) if params is None else (params[at], params[at + 1])
    if members is None:
        return w, b
    return w.index_select(0, members), b.index_select(0, members)


class EnsembleLinear(nn.Module):
    """E linear layers ``in -> out``: weight ``[E, in, out]``, bias ``[E, 1, out]`` (both zero until reset)."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int, *, bias_in_matmul: bool = True) -> None:
        super().__init__()
        if min(in_features, out_features, ensemble_size) < 1:
            raise ValueError(f"need in_features, out_features, ensemble_size >= 1; got {in_features}, {out_features}, "
                             f"{ensemble_size}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.ensemble_size = int(ensemble_size)
        self.bias_in_matmul = bool(bias_in_matmul)
        self.weight = nn.Parameter(torch.zeros(self.ensemble_size, self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.zeros(self.ensemble_size, 1, self.out_features))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``nn.Linear``'s default for every member, drawn weight first, then bias (SB3's init of SAC)."""
        uniform_fan_in_(self.weight, self.in_features, generator)
        uniform_fan_in_(self.bias, self.in_features, generator)

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``x[M, B, in]`` or shared ``x[B, in]`` -> ``[M, B, out]``; ``members`` (LongTensor[M]) picks which run."""
        return ensemble_linear(x, *_pick(self, members), self.bias_in_matmul)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-member affine: weight (ones) and bias (zeros) ``[E, 1, dim]``."""

    def __init__(self, dim: int, ensemble_size: int, *, addcmul: bool = True) -> None:
        super().__init__()
        self.addcmul = bool(addcmul)
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, dim))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)
        self.bias.zero_()

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        return ensemble_layer_norm(x, *_pick(self, members), self.addcmul)


class EnsembleMLP(nn.Module):
    """E MLPs ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` run together: every hidden layer is
    EnsembleLinear, (dropout), (LayerNorm with a per-member affine), activation; the output layer is linear.

    ``activation``, ``layernorm`` and ``dropout`` are one value for all hidden layers or one per hidden layer
    (activation names in ``ACTIVATIONS``; TD-MPC2's Q-functions drop out after the first layer only).
    Parameters are named ``layers.{i}.weight`` / ``.bias`` and ``norms.{i}.weight`` / ``.bias``
    (i the layer), in that order. ``legacy_names`` (old name -> name) lets subclasses load checkpoints written
    under the names they used before, and read those names as attributes.
    """

    layers: Sequence[EnsembleLinear]  # an nn.ModuleList (whose type does not say what it holds) of these

    def __init__(self, sizes: Sequence[int], ensemble_size: int, activation: str | Sequence[str] = "relu", *,
                 layernorm: bool | Sequence[bool] = False, dropout: float | Sequence[float] = 0.0,
                 bias_in_matmul: bool = True,
                 norm_addcmul: bool = True) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        hidden = len(sizes) - 2
        if hidden < 0:
            raise ValueError(f"sizes needs an input and an output size, got {sizes}")
        acts = [activation] * hidden if isinstance(activation, str) else list(activation)
        normed = [bool(layernorm)] * hidden if isinstance(layernorm, bool) else [bool(n) for n in layernorm]
        if len(acts) != hidden or len(normed) != hidden:
            raise ValueError(f"activation and layernorm: one value, or one per hidden layer ({hidden} here)")
        unknown = [a for a in acts if a not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation {unknown[0]!r}; choose from {sorted(ACTIVATIONS)}")
        drops = [float(dropout)] * hidden if isinstance(dropout, (int, float)) else [float(d) for d in dropout]
        if len(drops) != hidden:
            raise ValueError(f"dropout: one value, or one per hidden layer ({hidden} here)")
        if not all(0.0 <= d < 1.0 for d in drops):
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.sizes, self.ensemble_size, self.activations = sizes, int(ensemble_size), acts
        self.dropout: float | list[float] = drops[0] if len(set(drops)) == 1 else (drops or 0.0)
        """The dropout probability after each hidden layer's linear map: one number, or one per hidden layer."""
        self._drop = drops
        self.bias_in_matmul, self.norm_addcmul = bool(bias_in_matmul), bool(norm_addcmul)
        self._act = [ACTIVATIONS[a] for a in acts]
        self.layers = nn.ModuleList(  # type: ignore[assignment]  # typed by its items, above
            EnsembleLinear(i, o, ensemble_size, bias_in_matmul=bias_in_matmul) for i, o in itertools.pairwise(sizes))
        self.norms = nn.ModuleDict({str(i): EnsembleLayerNorm(sizes[i + 1], ensemble_size, addcmul=norm_addcmul)
                                    for i in range(hidden) if normed[i]})
        # per hidden layer: its norm's key, the position of its weight in ``parameters()`` and its shape, or None
        keys = list(self.norms)
        self._hidden = hidden
        self._norm_at = [(str(i), 2 * len(self.layers) + 2 * keys.index(str(i)), (sizes[i + 1],)) if normed[i] else None
                         for i in range(hidden)]
        self.legacy_names: dict[str, str] = {}

    @property
    def weights(self) -> list[nn.Parameter]:
        """The weight ``[E, in, out]`` of every layer, input layer first."""
        return [layer.weight for layer in self.layers]

    @property
    def biases(self) -> list[nn.Parameter]:
        return [layer.bias for layer in self.layers]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """``nn.Linear``'s default init in every layer (in order), LayerNorm affines to the identity."""
        for layer in self.layers:
            layer.reset_parameters(generator)
        for norm in self.norms.values():
            cast(EnsembleLayerNorm, norm).reset_parameters()

    def detached_params(self) -> list[Tensor]:
        """The parameters cut from autograd (no copy), in the order ``forward``'s ``params`` takes them."""
        return [p.detach() for p in self.parameters()]

    def hidden_features(self, x: Tensor, members: Tensor | None = None,
                        params: Sequence[Tensor] | None = None) -> Tensor:
        """The last hidden layer's activations ``[M, B, sizes[-2]]`` (arguments as ``forward``)."""
        return self._run(x, members, params, self._hidden)

    def forward(self, x: Tensor, members: Tensor | None = None, params: Sequence[Tensor] | None = None) -> Tensor:
        """``x[M, B, in]`` (member m's own rows) or ``x[B, in]`` (shared by all) -> ``[M, B, out]``.

        ``members`` (LongTensor[M]) picks which members run (default all E, in order); ``params`` (tensors in
        the order of ``parameters()``, e.g. ``detached_params()``) replace the module's own.
        """
        return self._run(x, members, params, self._hidden + 1)

    def _run(self, h: Tensor, members: Tensor | None, params: Sequence[Tensor] | None, stop: int) -> Tensor:
        for i, layer in enumerate(self.layers):  # written for little Python overhead: small networks plan with it
            if i == stop:
                break
            h = ensemble_linear(h, *_pick(layer, members, params, 2 * i), self.bias_in_matmul)
            if i < self._hidden:
                if self._drop[i] > 0.0:
                    h = F.dropout(h, self._drop[i], self.training)
                norm = self._norm_at[i]
                if norm is not None:
                    key, at, shape = norm
                    affine = _pick(cast(EnsembleLayerNorm, self.norms[key]), members, params, at)
                    h = ensemble_layer_norm(h, *affine, self.norm_addcmul, shape)
                h = self._act[i](h)
        return h

    def parameter_groups(self, weight_decay: float | Sequence[float]) -> list[dict]:
        """Optimiser groups: L2 weight decay on the weights only (one value, or one per layer, input layer first,
        as MBPO's ``construct_model``); the last group holds the biases and LayerNorm affines, not decayed."""
        rest = self.biases + [p for norm in self.norms.values() for p in (norm.weight, norm.bias)]
        if isinstance(weight_decay, (int, float)):
            return [{"params": self.weights, "weight_decay": float(weight_decay)},
                    {"params": rest, "weight_decay": 0.0}]
        decays = [float(d) for d in weight_decay]
        if len(decays) != len(self.layers):
            raise ValueError(f"weight_decay: one value, or one per layer ({len(self.layers)} here: the hidden layers "
                             f"and the output layer), got {len(decays)}")
        return [{"params": [w], "weight_decay": d} for w, d in zip(self.weights, decays)] + [
            {"params": rest, "weight_decay": 0.0}]

    # -- names from before this module ---------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        rename_legacy(state_dict, prefix, self.legacy_names)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            legacy = self.__dict__.get("legacy_names", {})
            if name in legacy:  # a parameter: "w1"
                return self.get_parameter(legacy[name])
            listed = [self.get_parameter(new) for old, new in legacy.items() if old.rsplit(".", 1)[0] == name]
            if listed:  # a list of them: "ln_weight" for "ln_weight.0", "ln_weight.1"
                return listed
            raise

    def extra_repr(self) -> str:
        norms = f", layernorm={[int(k) for k in self.norms]}" if len(self.norms) else ""
        drop = f", dropout={self.dropout}" if self.dropout else ""
        return f"sizes={self.sizes}, ensemble_size={self.ensemble_size}, activations={self.activations}{norms}{drop}"


def rename_legacy(state_dict: dict, prefix: str, names: dict[str, str]) -> None:
    """Move ``prefix + old`` to ``prefix + new`` in ``state_dict`` (in place) for every ``old -> new`` in ``names``."""
    for old, new in names.items():
        if prefix + old in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


__all__ = ["ACTIVATIONS", "mish", "EnsembleLayerNorm", "EnsembleLinear", "EnsembleMLP", "ensemble_layer_norm",
           "ensemble_linear", "rename_legacy", "uniform_fan_in_"]
