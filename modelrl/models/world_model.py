"""TD-MPC2's world model (Hansen, Su, Wang, ICLR 2024, arXiv 2310.16828) and its discrete regression.

The parts, as the official code builds them (github.com/nicklashansen/tdmpc2 at e9f5932,
``tdmpc2/common/world_model.py`` ``WorldModel.__init__`` and ``tdmpc2/common/layers.py`` ``mlp``/``enc``):

  z = h(s)          encoder:  (num_enc_layers - 1) x [Linear, LayerNorm, Mish], Linear, LayerNorm, SimNorm
  z' = d(z, a)      dynamics: 2 x [Linear, LayerNorm, Mish], Linear, LayerNorm, SimNorm
  R(z, a)           reward:   2 x [Linear, LayerNorm, Mish], Linear -> ``num_bins`` logits
  pi(z)             policy prior: 2 x [Linear, LayerNorm, Mish], Linear -> mean and log std (tanh-squashed Gaussian)
  Q_1..Q_K(z, a)    values:   Linear, Dropout, LayerNorm, Mish, Linear, LayerNorm, Mish, Linear -> ``num_bins`` logits
  term(z')          (``termination``: episodic tasks) 2 x [Linear, LayerNorm, Mish], Linear -> a logit

Weights are drawn from a normal with std 0.02 (truncated at +-2, which at that std truncates nothing), biases are
zero, and the last weights of R and of every Q are zero (official ``common/init.py`` and ``WorldModel.__init__``).

Reward and values are regressed as distributions over ``num_bins`` bins evenly spaced in symlog space between
``vmin`` and ``vmax`` (``TwoHot``; official ``common/math.py``): a target scalar becomes the two-hot vector of its
two nearest bins, the loss is the cross-entropy, and a prediction is read back as the softmax-weighted bin value,
mapped through symexp.

For speed d and R, which read the same input, run as the two heads of one network (``HeadsMLP``), and the K Qs as
one ``EnsembleMLP`` (one batched matmul per layer; the official code gets the same batching by vmapping K copies of
one network). The same function in fewer, larger kernels.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelrl.models.layers import EnsembleMLP
from modelrl.models.told import MLP, HeadsMLP, simnorm


def symlog(x: Tensor) -> Tensor:
    """sign(x) log(1 + |x|) (DreamerV3; TD-MPC2 ``math.symlog``)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """The inverse of ``symlog``: sign(x) (exp(|x|) - 1)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHot(nn.Module):
    """Discrete regression over ``num_bins`` bins evenly spaced in symlog space on [``vmin``, ``vmax``].

    Official ``math.two_hot``, ``two_hot_inv`` and ``soft_ce`` (config.yaml: num_bins 101, vmin -10, vmax 10).
    """

    bins: Tensor  # the bin centres in symlog space [num_bins] (a buffer, so it moves with the module)

    def __init__(self, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0) -> None:
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2 (the official 0 and 1, plain regression, are not offered), "
                             f"got {num_bins}")
        if not vmin < vmax:
            raise ValueError(f"need vmin < vmax, got {vmin} and {vmax}")
        self.num_bins, self.vmin, self.vmax = int(num_bins), float(vmin), float(vmax)
        self.bin_size = (self.vmax - self.vmin) / (self.num_bins - 1)
        self.register_buffer("bins", torch.linspace(self.vmin, self.vmax, self.num_bins), persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        """Scalars ``x[...]`` -> two-hot vectors ``[..., num_bins]``: weight 1 - f on the bin at or below symlog(x)
        and f on the next, f the fraction of the way between them (symlog(x) clamped to [vmin, vmax])."""
        pos = (symlog(x).clamp(self.vmin, self.vmax) - self.vmin) / self.bin_size
        low = torch.floor(pos)
        frac = (pos - low).unsqueeze(-1)
        idx = low.long().unsqueeze(-1)
        out = torch.zeros(*x.shape, self.num_bins, dtype=x.dtype, device=x.device)
        out = out.scatter(-1, idx, 1.0 - frac)
        # at vmax frac is 0 and the wrapped index (official: modulo num_bins) takes weight 0
        return out.scatter(-1, (idx + 1) % self.num_bins, frac)

    def decode(self, logits: Tensor) -> Tensor:
        """Logits ``[..., num_bins]`` -> scalars ``[...]``: symexp of the softmax-weighted bin value."""
        return symexp(torch.softmax(logits, dim=-1) @ self.bins.to(logits.dtype))

    def cross_entropy(self, logits: Tensor, target: Tensor) -> Tensor:
        """-sum_i two_hot(target)_i log softmax(logits)_i, ``[...]`` for ``logits[..., num_bins]``, ``target[...]``."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1)


class PolicySample(NamedTuple):
    """A draw of TD-MPC2's policy prior (official ``WorldModel.pi``)."""

    action: Tensor  # tanh(mean + std * eps), [B, A]
    mean: Tensor  # tanh(mean), [B, A]: the deterministic action
    log_prob: Tensor  # log-likelihood of ``action`` with the tanh correction, [B]
    scaled_entropy: Tensor  # the entropy term of the policy loss, [B] (see ``WorldModel.pi``)


def _trunc_normal_(t: Tensor, generator: torch.Generator, std: float = 0.02) -> None:
    """Official ``init.weight_init``: trunc_normal_(std=0.02) (bounds +-2, absolute), drawn on the CPU ``generator``."""
    with torch.no_grad():
        t.copy_(nn.init.trunc_normal_(torch.empty(t.shape), std=std, generator=generator))


class WorldModel(nn.Module):
    """TD-MPC2's encoder, latent dynamics, reward, policy prior, Q ensemble and termination head (module docstring).

    Implements the ``Dynamics`` protocol on latent states (``step(z, a) -> (z', r)``), so any planner in
    ``modelrl.planners`` can plan through it. Defaults are config.yaml's 5M model (``MODEL_SIZE[5]``).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        latent_dim: int = 512,  # official config.yaml: latent_dim 512
        enc_dim: int = 256,  # official: enc_dim 256
        mlp_dim: int = 512,  # official: mlp_dim 512
        num_enc_layers: int = 2,  # official: num_enc_layers 2
        num_q: int = 5,  # official: num_q 5
        dropout: float = 0.01,  # official: dropout 0.01 (Q-functions, after the first layer)
        simnorm_dim: int = 8,  # official: simnorm_dim 8
        num_bins: int = 101,  # official: num_bins 101
        vmin: float = -10.0,  # official: vmin -10
        vmax: float = 10.0,  # official: vmax +10
        log_std_min: float = -10.0,  # official: log_std_min -10
        log_std_max: float = 2.0,  # official: log_std_max 2
        termination: bool = False,  # official: a termination head when episodic
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if num_q < 2:
            raise ValueError(f"num_q must be >= 2 (targets take a minimum over two heads), got {num_q}")
        if latent_dim % simnorm_dim:
            raise ValueError(f"latent_dim ({latent_dim}) must be a multiple of simnorm_dim ({simnorm_dim})")
        if num_enc_layers < 2:
            raise ValueError(f"num_enc_layers must be >= 2 (a hidden layer and the output layer), got {num_enc_layers}")
        self.obs_dim, self.action_dim, self.latent_dim = int(obs_dim), int(action_dim), int(latent_dim)
        self.num_q, self.simnorm_dim = int(num_q), int(simnorm_dim)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        za = latent_dim + action_dim
        self.encoder = MLP(obs_dim, enc_dim, latent_dim, norm=True, num_hidden=num_enc_layers - 1)
        self.enc_norm = nn.LayerNorm(latent_dim)  # the encoder's last layer: Linear, LayerNorm, SimNorm
        self.dyn_rew = HeadsMLP(za, mlp_dim, [latent_dim, num_bins], first="ln_mish", second="ln_mish")  # d, R
        self.dyn_norm = nn.LayerNorm(latent_dim)  # d's last layer: Linear, LayerNorm, SimNorm
        self.policy = MLP(latent_dim, mlp_dim, 2 * action_dim, norm=True)
        self.q = EnsembleMLP([za, mlp_dim, mlp_dim, num_bins], num_q, "mish", layernorm=True, dropout=[dropout, 0.0])
        self.term = MLP(latent_dim, mlp_dim, 1, norm=True) if termination else None
        self.two_hot = TwoHot(num_bins, vmin, vmax)
        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(int(seed))
        else:
            gen.seed()
        for module in (self.encoder, self.dyn_rew, self.policy, self.q, self.term):
            if module is None:
                continue
            for name, p in module.named_parameters():
                if "norms" in name:
                    continue  # LayerNorm affines stay at their identity
                if name.endswith("weight"):
                    _trunc_normal_(p, gen)
                else:
                    with torch.no_grad():
                        p.zero_()
        with torch.no_grad():  # official: zero_([self._reward[-1].weight, self._Qs.params["2", "weight"]])
            self.dyn_rew.layers[-1].weight[1].zero_()
            self.q.layers[-1].weight.zero_()

    @property
    def state_dim(self) -> int:
        return self.latent_dim

    def h(self, obs: Tensor) -> Tensor:
        """Representation z = h(s) ``[B, L]`` (each group of ``simnorm_dim`` entries sums to 1)."""
        return simnorm(self.enc_norm(self.encoder(obs)), self.simnorm_dim)

    def next(self, z: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Latent dynamics and reward: ``(d(z, a)[B, L], R(z, a) logits [B, num_bins])``."""
        z_next, r = self.dyn_rew(torch.cat([z, a], dim=-1))
        return simnorm(self.dyn_norm(z_next), self.simnorm_dim), r

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """The ``Dynamics`` protocol on latent states: next latent and the reward as a scalar ``[B]``."""
        z, r = self.next(state, action)
        return z, self.two_hot.decode(r)

    def termination_logit(self, z: Tensor) -> Tensor:
        """Logit that the transition into ``z[B, L]`` ended the episode, ``[B]`` (needs ``termination``)."""
        if self.term is None:
            raise RuntimeError("this world model has no termination head (build it with termination=True)")
        return self.term(z)[:, 0]

    def pi(self, z: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None) -> PolicySample:
        """A draw of the policy prior at ``z[B, L]`` (official ``WorldModel.pi``): mean mu and log std
        ``log_std_min + (log_std_max - log_std_min) (tanh(x) + 1) / 2`` from the network, a = tanh(mu + std eps).

        ``scaled_entropy`` is the official policy loss's entropy term: A times the negated Gaussian log-likelihood of
        the pre-squash draw, times log_prob / (log_prob + 1e-8) (the official ``entropy_scale``, which is 1 up to
        1e-8). ``noise`` (standard normal ``[B, A]``) replaces the draw from ``generator``.
        """
        mu, raw = self.policy(z).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        gaussian = (-0.5 * noise.pow(2) - log_std).sum(-1) - 0.9189385175704956 * mu.shape[-1]  # log N, pre-squash
        pre = mu + noise * log_std.exp()
        action = torch.tanh(pre)
        log_prob = gaussian - torch.log(F.relu(1.0 - action.pow(2)) + 1e-6).sum(-1)
        scaled_entropy = -log_prob * (gaussian * mu.shape[-1] / (log_prob + 1e-8))
        return PolicySample(action, torch.tanh(mu), log_prob, scaled_entropy)

    def q_logits(self, z: Tensor, a: Tensor, members: Tensor | None = None,
                 params: list[Tensor] | None = None) -> Tensor:
        """Value logits ``[K, B, num_bins]`` of the heads ``members`` (default all), with ``params`` in place of the
        Qs' own (e.g. ``self.q.detached_params()``, or a target copy's)."""
        return self.q(torch.cat([z, a], dim=-1), members=members, params=params)

    def q_value(self, z: Tensor, a: Tensor, pick: Tensor, reduce: str = "min", target: nn.Module | None = None,
                params: list[Tensor] | None = None) -> Tensor:
        """The minimum (``"min"``: TD targets) or mean (``"avg"``: planning, the policy loss) of the two Q heads
        ``pick`` as scalars ``[B]`` (official ``WorldModel.Q``); ``target`` is a copy of ``self.q`` to use instead."""
        x = torch.cat([z, a], dim=-1)
        logits = self.q(x, members=pick, params=params) if target is None else target(x, members=pick)
        values = self.two_hot.decode(logits)  # [2, B]
        return values.min(0).values if reduce == "min" else values.mean(0)

    def draw_pick(self, generator: torch.Generator | None = None) -> Tensor:
        """Two Q heads drawn at random (official ``torch.randperm(num_q)[:2]``)."""
        device = self.q.layers[0].weight.device if generator is None else generator.device
        return torch.randperm(self.num_q, generator=generator, device=device)[:2]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["PolicySample", "TwoHot", "WorldModel", "symexp", "symlog"]
