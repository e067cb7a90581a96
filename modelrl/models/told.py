"""TOLD, the task-oriented latent dynamics model of TD-MPC (Hansen, Wang, Su 2022, Sec. 3.1).

Five parts, as in the official code (``nicklashansen/tdmpc`` src/algorithm/tdmpc.py, helper.py):
  z = h(s)                      encoder:  Linear(S, enc) ELU Linear(enc, L)
  z', r = d(z, a), R(z, a)      dynamics and reward: Linear(L+A, m) ELU Linear(m, m) ELU Linear(m, out)
  a = pi(z)                     policy:   same MLP shape, tanh output
  Q_1..Q_K(z, a)                values:   Linear(L+A, m) LayerNorm Tanh Linear(m, m) ELU Linear(m, 1)
Orthogonal weights, zero biases, and zero last layers for R and Q (official ``TOLD.__init__``).

For speed on a CPU the networks that read the same input run fused (``HeadsMLP``, an ``EnsembleMLP``
of modelrl/models/layers.py): d and R run as the two heads of one network and the K Q-functions as
one K-headed network, one batched matmul per layer (weights ``[K, in, out]``). That is the same
computation as separate ``nn.Sequential``s, in fewer and larger kernels.

TD-MPC2 options (Hansen, Su, Wang 2024), off by default: ``simnorm`` (the latent is split into
groups of ``simnorm_dim`` and each group is a softmax), ``layernorm_mish`` (every hidden layer
is Linear, LayerNorm, Mish) and ``termination`` (a head on the next latent state predicting that
the episode ended, for tasks that terminate: TD-MPC2's ``episodic``). ``num_q`` > 2 gives an ensemble whose targets
use the minimum of two heads drawn at random (TD-MPC2 Sec. 3.3).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelrl.models.layers import EnsembleMLP, mish


def _orthogonal_(weight: Tensor, generator: torch.Generator | None = None) -> None:
    """Orthogonal init of a weight stored ``[in, out]`` or ``[K, in, out]`` (one matrix per head)."""
    mats = weight.unsqueeze(0) if weight.ndim == 2 else weight
    for w in mats:
        flat = torch.randn(w.shape, generator=generator)
        rows, cols = flat.shape
        q, r = torch.linalg.qr(flat if rows >= cols else flat.T)
        q = q * torch.sign(torch.diagonal(r))  # uniform over orthogonal matrices (as nn.init.orthogonal_)
        w.copy_(q if rows >= cols else q.T)


class HeadsMLP(EnsembleMLP):
    """K MLPs with two hidden layers that read one input ``x[B, in]`` and run as one network.

    Each layer is one batched matmul (``baddbmm``, weights ``[K, in, out]``) over the heads (``EnsembleMLP``);
    the last layer is one matmul per head when the heads differ in width (its weight is padded with zero
    columns to the widest). ``first`` is the first hidden layer's activation: "elu" (TD-MPC d, R, pi),
    "ln_tanh" (TD-MPC Q) or "ln_mish" (TD-MPC2, every layer).
    """

    KINDS = {"elu": (False, "elu"), "ln_tanh": (True, "tanh"), "ln_mish": (True, "mish")}  # (LayerNorm, activation)

    def __init__(self, in_dim: int, hidden: int, out_dims: list[int], first: str = "elu", second: str = "elu") -> None:
        (ln1, act1), (ln2, act2) = self.KINDS[first], self.KINDS[second]
        # norm_addcmul=False: the LayerNorm affine as * weight + bias, TD-MPC's rounding as it was before EnsembleMLP
        super().__init__([in_dim, hidden, hidden, max(out_dims)], len(out_dims), [act1, act2], layernorm=[ln1, ln2],
                         norm_addcmul=False)
        self.k, self.hidden, self.out_dims = len(out_dims), hidden, list(out_dims)
        self.first, self.second = first, second
        self.same_width = len(set(out_dims)) == 1
        self.legacy_names = {  # parameter names before EnsembleMLP
            **{f"{kind}{i + 1}": f"layers.{i}.{new}"
               for kind, new in (("w", "weight"), ("b", "bias")) for i in range(3)},
            **{f"ln{i + 1}_{kind}": f"norms.{i}.{new}" for kind, new in (("w", "weight"), ("b", "bias"))
               for i, on in enumerate((ln1, ln2)) if on}}

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None, zero_last: bool = False) -> None:
        for layer in self.layers[:-1]:
            _orthogonal_(layer.weight, generator)
        last = self.layers[-1].weight
        for i, out in enumerate(self.out_dims):  # padded columns stay zero
            last[i].zero_()
            if not zero_last:
                _orthogonal_(last[i, :, :out], generator)
        for layer in self.layers:
            layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:  # type: ignore[override]  # heads, not members: no subset
        """``x[B, in]`` -> ``[K, B, out]`` when all heads are ``out`` wide, else a list of ``[B, out_i]``."""
        x = x.expand(self.k, -1, -1)  # [K, B, in]
        if self.same_width:
            return super().forward(x)
        h = self.hidden_features(x)  # [K, B, m]
        last = self.layers[2]
        w, b = last.weight, last.bias
        return [torch.addmm(b[i, 0, :o], h[i], w[i, :, :o]) for i, o in enumerate(self.out_dims)]


class MLP(nn.Module):
    """An MLP with two hidden layers (one with ``two_hidden=False``: the encoder; any number with ``num_hidden``),
    ELU or LayerNorm+Mish."""

    # nn.ModuleLists (whose type does not say what they hold) of these
    linears: Sequence[nn.Linear]
    norms: Sequence[nn.LayerNorm] | None

    def __init__(self, in_dim: int, hidden: int, out_dim: int, two_hidden: bool = True, norm: bool = False,
                 num_hidden: int | None = None) -> None:
        super().__init__()
        n = (2 if two_hidden else 1) if num_hidden is None else int(num_hidden)  # num_hidden: any count (TD-MPC2)
        if n < 1:
            raise ValueError(f"an MLP needs at least one hidden layer, got {n}")
        dims = [in_dim] + [hidden] * n + [out_dim]
        self.linears = nn.ModuleList(  # type: ignore[assignment]  # typed by its items, above
            nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.norms = (nn.ModuleList(nn.LayerNorm(d) for d in dims[1:-1])  # type: ignore[assignment]  # as linears
                      if norm else None)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for lin in self.linears:
            w = torch.empty(lin.in_features, lin.out_features)
            _orthogonal_(w, generator)
            lin.weight.copy_(w.T)
            lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.linears) - 1
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < last:
                x = mish(self.norms[i](x)) if self.norms is not None else F.elu(x)
        return x


def simnorm(z: Tensor, group: int) -> Tensor:
    """TD-MPC2's simplicial normalisation: softmax over each group of ``group`` latent entries.

    The softmax runs over the second-to-last axis of the groups transposed: the same function, but ATen's CPU
    softmax over a last axis of 8 entries handles one short row at a time, while over an inner axis it runs
    across the groups in vector lanes (6-8x faster forward, 4.6-5.3x forward plus backward, on [512, 128] and
    [512, 512] latents on this CPU; ``benchmarks.tdmpc2_speed`` has its effect on planning and updates)."""
    shape = z.shape
    groups = z.view(*shape[:-1], -1, group).transpose(-1, -2)  # [..., group, G]
    return torch.softmax(groups, dim=-2).transpose(-1, -2).reshape(shape)


class TOLD(nn.Module):
    """Encoder h, latent dynamics d, reward R, policy pi and K Q-functions (see the module docstring).

    Implements the ``Dynamics`` protocol on latent states (``step(z, a) -> (z', r)``), so any
    planner in ``modelrl.planners`` can plan through it.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        latent_dim: int = 50,  # official default.yaml: latent_dim 50
        enc_dim: int = 256,  # official default.yaml: enc_dim 256
        mlp_dim: int = 512,  # official default.yaml: mlp_dim 512
        num_q: int = 2,  # TD-MPC: twin Q (Q1, Q2); TD-MPC2: 5
        simnorm_latent: bool = False,  # TD-MPC2 option
        simnorm_dim: int = 8,  # TD-MPC2 default.yaml: simnorm_dim 8
        layernorm_mish: bool = False,  # TD-MPC2 option: Linear, LayerNorm, Mish in every hidden layer
        termination: bool = False,  # TD-MPC2 option (episodic tasks): a head predicting termination from z'
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if num_q < 2:
            raise ValueError(f"num_q must be >= 2 (the targets take a minimum over two heads), got {num_q}")
        if simnorm_latent and latent_dim % simnorm_dim:
            raise ValueError(f"latent_dim ({latent_dim}) must be a multiple of simnorm_dim ({simnorm_dim})")
        self.obs_dim, self.action_dim, self.latent_dim = int(obs_dim), int(action_dim), int(latent_dim)
        self.num_q, self.simnorm_latent, self.simnorm_dim = int(num_q), bool(simnorm_latent), int(simnorm_dim)
        act = "ln_mish" if layernorm_mish else "elu"
        za = latent_dim + action_dim
        self.encoder = MLP(obs_dim, enc_dim, latent_dim, two_hidden=False, norm=layernorm_mish)
        self.dyn_rew = HeadsMLP(za, mlp_dim, [latent_dim, 1], first=act, second=act)  # heads: d, R
        self.policy = MLP(latent_dim, mlp_dim, action_dim, norm=layernorm_mish)
        self.q = HeadsMLP(za, mlp_dim, [1] * num_q, first="ln_mish" if layernorm_mish else "ln_tanh", second=act)
        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(int(seed))
        else:
            gen.seed()
        self.encoder.reset_parameters(gen)
        self.dyn_rew.reset_parameters(gen)
        with torch.no_grad():  # R's last layer starts at zero (official TOLD.__init__)
            self.dyn_rew.layers[-1].weight[1].zero_()
        self.policy.reset_parameters(gen)
        self.q.reset_parameters(gen, zero_last=True)
        # built last, so the other parts' initial weights do not depend on it
        self.term = MLP(latent_dim, mlp_dim, 1, norm=layernorm_mish) if termination else None
        if self.term is not None:
            self.term.reset_parameters(gen)

    @property
    def state_dim(self) -> int:
        return self.latent_dim

    def _latent(self, z: Tensor) -> Tensor:
        return simnorm(z, self.simnorm_dim) if self.simnorm_latent else z

    def h(self, obs: Tensor) -> Tensor:
        """Representation z = h(s), for ``obs[..., S]``."""
        return self._latent(self.encoder(obs))

    def next(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Latent dynamics and reward: ``(d(z, a)[B, L], R(z, a)[B])``."""
        z_next, r = self.dyn_rew(torch.cat([z, a], dim=-1))
        return self._latent(z_next), r[:, 0]

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """The ``Dynamics`` protocol on latent states: ``next``."""
        return self.next(state, action)

    def termination_logit(self, z: Tensor) -> Tensor:
        """Logit that the transition into ``z[B, L]`` ended the episode, ``[B]`` (needs ``termination``)."""
        if self.term is None:
            raise RuntimeError("this TOLD has no termination head (build it with termination=True)")
        return self.term(z)[:, 0]

    def pi(self, z: Tensor, std: float = 0.0, generator: torch.Generator | None = None, clip: float = 0.3,
           noise: Tensor | None = None) -> Tensor:
        """Policy action tanh(pi(z)); with ``std`` > 0, plus noise N(0, std^2) clipped to +-``clip``,
        then clamped inside (-1, 1) with a straight-through gradient (official ``TruncatedNormal``).
        ``noise`` (standard normal, the shape of the action) replaces the draw from ``generator``."""
        mu = torch.tanh(self.policy(z))
        if std <= 0:
            return mu
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        eps = (noise * std).clamp(-clip, clip)
        x = mu + eps
        return x - x.detach() + x.detach().clamp(-1 + 1e-6, 1 - 1e-6)

    def Q(self, z: Tensor, a: Tensor) -> Tensor:
        """All K values ``[K, B]``."""
        return self.q(torch.cat([z, a], dim=-1))[..., 0]

    def draw_pick(self, generator: torch.Generator | None = None) -> Tensor | None:
        """The two Q heads ``q_min`` uses: None for twin Q (Q1 and Q2), else two drawn at random (TD-MPC2)."""
        if self.num_q <= 2:
            return None
        device = self.q.layers[0].weight.device if generator is None else generator.device
        return torch.randperm(self.num_q, generator=generator, device=device)[:2]

    def q_min(self, z: Tensor, a: Tensor, generator: torch.Generator | None = None,
              pick: Tensor | None = None) -> Tensor:
        """min of two Q heads ``[B]``: Q1 and Q2 (TD-MPC), or two drawn at random when K > 2 (TD-MPC2);
        ``pick`` (from ``draw_pick``) gives the two instead of a draw from ``generator``."""
        qs = self.Q(z, a)
        if self.num_q > 2:
            if pick is None:
                pick = self.draw_pick(generator)
            qs = qs.index_select(0, pick.to(qs.device))  # type: ignore[union-attr]  # num_q > 2: draw_pick drew
        return torch.minimum(qs[0], qs[1])

    def q_parameters(self) -> list[nn.Parameter]:
        return list(self.q.parameters())

    def flops_per_step(self) -> dict[str, int]:
        """Multiply-adds x 2 per row of one ``next`` call and one ``Q`` + ``pi`` evaluation (dense layers only)."""
        def heads(m: HeadsMLP) -> int:
            return 2 * (sum(w.numel() for w in m.weights[:-1]) + sum(m.hidden * o for o in m.out_dims))  # no padding

        pi = 2 * sum(lin.weight.numel() for lin in self.policy.linears)
        return {"next": heads(self.dyn_rew), "q": heads(self.q), "pi": pi}


__all__ = ["MLP", "TOLD", "HeadsMLP", "simnorm"]
