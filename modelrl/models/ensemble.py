"""Deterministic MLP and probabilistic ensemble dynamics models: one batched implementation.

The model maps a normalised ``[s, a]`` to the normalised target ``[s' - s, (r), (term logit)]``.
All E members run in one batched matmul per layer (weights ``[E, in, out]``, an ``EnsembleMLP`` of
modelrl/models/layers.py), so an ensemble costs one forward pass, not E. A deterministic MLP is the
E = 1, non-probabilistic case.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelrl.models.layers import ACTIVATIONS, EnsembleMLP, rename_legacy
from modelrl.models.normalizer import Normalizer
from modelrl.types import as_tensor, fresh_seed


class Prediction(NamedTuple):
    """A model prediction in real units; ``reward``/``terminated`` are None when not learned."""

    next_obs: Tensor  # [B, S]
    reward: Tensor | None  # [B]
    terminated: Tensor | None  # bool [B]


class EnsembleModel(nn.Module):
    """E MLPs evaluated together, each predicting a Gaussian (or a point) over ``s' - s`` (+ r).

    Probabilistic members output a mean and a log-variance; the log-variance is soft-bounded
    between learned per-member ``min_logvar`` and ``max_logvar`` with softplus (PETS, Chua et
    al. 2018, appendix A.1), so it can neither collapse nor explode off the data. ``elite_idx``
    holds the members that propagation uses (set by the trainer from hold-out error).
    """

    elite_idx: Tensor  # a buffer (register_buffer)
    max_logvar: nn.Parameter | None  # None for a non-probabilistic model
    min_logvar: nn.Parameter | None

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        ensemble_size: int = 5,  # B = 5 bootstrapped members (PETS, Sec. 4 and appendix)
        hidden_size: int = 200,  # mbrl-lib conf/dynamics_model/gaussian_mlp_ensemble.yaml: hid_size 200
        num_layers: int = 4,  # hidden layers; mbrl-lib gaussian_mlp_ensemble.yaml: num_layers 4
        activation: str = "silu",  # swish = SiLU (PETS appendix; mbrl-lib use_silu: true)
        probabilistic: bool = True,  # PE = probabilistic ensemble (PETS)
        num_elites: int | None = None,  # None = all members, as PETS propagates through all 5
        learn_reward: bool = False,  # PETS uses the known reward (mbrl-lib pets_cartpole learned_rewards: false)
        learn_termination: bool = False,  # ours: off; tasks with terminations usually have a known term_fn
        learn_logvar_bounds: bool = True,  # PETS appendix A.1 (mbrl-lib's config turns it off)
        init_max_logvar: float = 0.5,  # PETS reference code / mbrl-lib GaussianMLP: max_logvar = 0.5
        init_min_logvar: float = -10.0,  # PETS reference code / mbrl-lib GaussianMLP: min_logvar = -10
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be >= 1, got {obs_dim} and {action_dim}")
        if ensemble_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"need ensemble_size, hidden_size, num_layers >= 1; got {ensemble_size}, {hidden_size}, {num_layers}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        num_elites = ensemble_size if num_elites is None else int(num_elites)
        if not 1 <= num_elites <= ensemble_size:
            raise ValueError(f"need 1 <= num_elites <= ensemble_size, got {num_elites} of {ensemble_size}")
        if init_min_logvar >= init_max_logvar:
            raise ValueError(f"init_min_logvar ({init_min_logvar}) must be below init_max_logvar ({init_max_logvar})")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.ensemble_size = int(ensemble_size)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.activation = activation
        self.probabilistic = bool(probabilistic)
        self.learn_reward, self.learn_termination = bool(learn_reward), bool(learn_termination)
        self.in_dim = self.obs_dim + self.action_dim
        self.gauss_dim = self.obs_dim + int(self.learn_reward)  # Gaussian (regressed) targets
        self.out_dim = self.gauss_dim + int(self.learn_termination)  # + termination logit

        head = self.gauss_dim * (2 if self.probabilistic else 1) + int(self.learn_termination)
        sizes = [self.in_dim] + [self.hidden_size] * self.num_layers + [head]
        self.net = EnsembleMLP(sizes, self.ensemble_size, activation)
        if self.probabilistic:
            shape = (self.ensemble_size, 1, self.gauss_dim)  # per member, so members stay independent
            self.max_logvar = nn.Parameter(torch.full(shape, float(init_max_logvar)), requires_grad=learn_logvar_bounds)
            self.min_logvar = nn.Parameter(torch.full(shape, float(init_min_logvar)), requires_grad=learn_logvar_bounds)
        else:
            self.max_logvar = self.min_logvar = None
        self.input_normalizer = Normalizer(self.in_dim)
        self.target_normalizer = Normalizer(self.gauss_dim)
        self.register_buffer("elite_idx", torch.arange(num_elites))
        self._elites_all: bool | None = None  # whether elite_idx is 0..E-1 (cached: reading it is a device sync)
        self.reset_parameters(seed)

    # -- construction -------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Truncated-normal weights, std = 1 / (2 sqrt(fan_in)), zero biases (PETS reference
        code; mbrl-lib ``truncated_normal_init``). Each member draws its own weights."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(fresh_seed(seed))
        for layer in self.net.layers:
            std = 1.0 / (2.0 * math.sqrt(layer.in_features))
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std, generator=gen)
            layer.bias.zero_()

    @property
    def num_elites(self) -> int:
        return int(self.elite_idx.numel())

    @property
    def device(self) -> torch.device:
        return self.net.layers[0].weight.device

    @torch.no_grad()
    def set_elites(self, idx) -> None:
        """Make the members ``idx`` (``num_elites`` distinct indices) the elites."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.elite_idx.device).flatten()
        if idx.numel() != self.num_elites:
            raise ValueError(f"expected {self.num_elites} elite indices, got {idx.numel()}")
        if idx.unique().numel() != idx.numel() or idx.min() < 0 or idx.max() >= self.ensemble_size:
            raise ValueError(f"elite indices must be distinct members in [0, {self.ensemble_size}), got {idx.tolist()}")
        self.elite_idx.copy_(idx)
        self._elites_all = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        rename_legacy(state_dict, prefix, {  # checkpoints written before EnsembleMLP
            f"{kind}.{i}": f"net.layers.{i}.{new}" for kind, new in (("weights", "weight"), ("biases", "bias"))
            for i in range(len(self.net.layers))})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._elites_all = None  # elite_idx may have changed

    def parameter_groups(self, weight_decay: float | Sequence[float]) -> list[dict]:
        """Optimiser groups: L2 weight decay on the weight matrices only (one value, or one per layer, input
        layer first, as MBPO's ``construct_model``); biases and the log-variance bounds (which have their own
        penalty) are not pulled towards zero."""
        groups = self.net.parameter_groups(weight_decay)
        groups[-1]["params"] += [p for p in (self.max_logvar, self.min_logvar) if p is not None and p.requires_grad]
        return groups

    # -- network ------------------------------------------------------------------------------
    def forward(self, x: Tensor, members: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Normalised ``x[M, B, in]`` (or ``[B, in]``, shared by all) -> ``(mean[M, B, out],
        logvar[M, B, G] | None)`` in normalised target units.

        ``members`` (LongTensor[M]) picks which members run; default all E. ``mean[..., G]`` is
        the termination logit when a termination head is learned (it has no variance).
        """
        max_lv: Tensor | None = self.max_logvar  # None (both) unless probabilistic
        min_lv: Tensor | None = self.min_logvar
        if members is self.elite_idx:
            if self._elites_all is None:
                self._elites_all = self._is_all(members)
            all_members = self._elites_all
        else:
            all_members = members is None or self._is_all(members)
        if members is None or all_members:
            members = None
        elif max_lv is not None and min_lv is not None:
            max_lv, min_lv = max_lv.index_select(0, members), min_lv.index_select(0, members)
        h = self.net(x, members)
        if max_lv is None or min_lv is None:
            return h, None
        g = self.gauss_dim
        mean = torch.cat([h[..., :g], h[..., 2 * g:]], dim=-1) if self.learn_termination else h[..., :g]
        logvar = max_lv - F.softplus(max_lv - h[..., g:2 * g])
        logvar = min_lv + F.softplus(logvar - min_lv)
        return mean, logvar

    def _is_all(self, members: Tensor) -> bool:
        """Whether ``members`` is 0..E-1 in order (then no weight copy is needed)."""
        e = self.ensemble_size
        return members.numel() == e and bool(torch.equal(members, torch.arange(e, device=members.device)))

    def forward_rows(self, x: Tensor, member_idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Row i of normalised ``x[B, in]`` through member ``member_idx[i]``: ``(mean[B, out],
        logvar[B, G] | None)``.

        Rows are grouped by member and each group runs only through its own member (padded to
        the largest group), so the cost is about B rows, not E * B as with running every member
        on every row and gathering.
        """
        b = x.shape[0]
        used, slot = torch.unique(member_idx, return_inverse=True)  # slot[i] in [0, U)
        if used.numel() == 1:
            mean, logvar = self.forward(x.unsqueeze(0), used)
            return mean[0], None if logvar is None else logvar[0]
        counts = torch.bincount(slot, minlength=used.numel())
        order = torch.argsort(slot, stable=True)
        sorted_slot = slot[order]
        starts = torch.cumsum(counts, 0) - counts
        pos_sorted = torch.arange(b, device=x.device) - starts[sorted_slot]
        cap = int(counts.max())
        flat = torch.empty_like(pos_sorted).index_copy_(0, order, sorted_slot * cap + pos_sorted)
        # row i sits at flat[i] = slot * cap + position of the padded [U, cap] batch
        padded = x.new_zeros(used.numel() * cap, x.shape[1]).index_copy_(0, flat, x)
        mean, logvar = self.forward(padded.view(used.numel(), cap, -1), used)
        mean = mean.reshape(-1, mean.shape[-1]).index_select(0, flat)
        return mean, None if logvar is None else logvar.reshape(-1, logvar.shape[-1]).index_select(0, flat)

    def forward_periodic(self, x: Tensor, members: Tensor) -> tuple[Tensor, Tensor | None]:
        """Row i of normalised ``x[B, in]`` through member ``members[i % M]`` (B a multiple of M): the rows
        of each member are every M-th, so one view makes the ``[M, B / M, in]`` batch, with no sorting,
        no padding and no device sync (TS-inf's fixed assignment)."""
        m, b = members.numel(), x.shape[0]
        mean, logvar = self.forward(x.view(b // m, m, -1).transpose(0, 1), members)
        mean = mean.transpose(0, 1).reshape(b, -1)
        return mean, None if logvar is None else logvar.transpose(0, 1).reshape(b, -1)

    # -- prediction in real units -------------------------------------------------------------
    def predict(
        self,
        obs,
        action,
        member_idx: Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
        periodic: bool = False,
    ) -> Prediction:
        """Next observation (and learned reward / termination) in real units.

        ``member_idx`` None: the average of the elites' means (expectation, deterministic).
        ``member_idx[B]``: row i uses that member; with ``sample`` (probabilistic models) the
        output is drawn from the member's Gaussian using ``generator``. ``periodic``: row i uses
        elite ``i % num_elites`` (the same as that ``member_idx``, computed without gathering rows).
        """
        obs = as_tensor(obs, device=self.device)
        action = as_tensor(action, device=self.device)
        x = self.input_normalizer.normalize(torch.cat([obs, action], dim=-1))
        if member_idx is None and not periodic:
            if sample:
                raise ValueError("sample=True needs member_idx (which member each row samples from)")
            mean, _ = self.forward(x, self.elite_idx)
            out = mean.mean(0)
        else:
            if periodic:
                if obs.shape[0] % self.num_elites:
                    raise ValueError(
                        f"periodic assignment needs a multiple of {self.num_elites} rows, got {obs.shape[0]}")
                out, logvar = self.forward_periodic(x, self.elite_idx)
            else:
                member_idx = torch.as_tensor(member_idx, dtype=torch.long, device=self.device)
                if member_idx.shape != (obs.shape[0],):
                    raise ValueError(f"member_idx must have shape [{obs.shape[0]}], got {tuple(member_idx.shape)}")
                out, logvar = self.forward_rows(x, member_idx)
            if sample and logvar is not None:
                g = self.gauss_dim
                noise = torch.randn(logvar.shape, generator=generator, dtype=logvar.dtype, device=logvar.device)
                gauss = torch.addcmul(out[:, :g], torch.exp(0.5 * logvar), noise)
                out = torch.cat([gauss, out[:, g:]], dim=-1) if self.learn_termination else gauss
        target = self.target_normalizer.denormalize(out[:, : self.gauss_dim])
        next_obs = obs + target[:, : self.obs_dim]
        reward = target[:, self.obs_dim] if self.learn_reward else None
        terminated = out[:, self.gauss_dim] > 0 if self.learn_termination else None
        return Prediction(next_obs, reward, terminated)

    # -- training objective -------------------------------------------------------------------
    def loss(self, x: Tensor, target: Tensor, terminated: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Training loss on normalised ``x[E, B, in]`` and ``target[E, B, G]`` (member e sees its
        own rows). Returns (total, per-member loss[E]).

        Probabilistic: Gaussian NLL (up to constants), mean over rows and dims, summed over
        members, plus 0.01 * (sum max_logvar - sum min_logvar) (PETS appendix A.1 /
        reference code). Deterministic: MSE. A termination head adds a logistic loss.
        """
        mean, logvar = self.forward(x)
        g = self.gauss_dim
        err = (mean[..., :g] - target) ** 2
        if logvar is None:
            per_member = err.mean((1, 2))
        else:
            per_member = (err * torch.exp(-logvar) + logvar).mean((1, 2))
        if self.learn_termination:
            if terminated is None:
                raise ValueError("this model learns termination: pass the terminated flags")
            per_member = per_member + F.binary_cross_entropy_with_logits(
                mean[..., g], terminated.to(mean.dtype), reduction="none"
            ).mean(1)
        total = per_member.sum()
        max_lv, min_lv = self.max_logvar, self.min_logvar  # None unless probabilistic
        if max_lv is not None and min_lv is not None and max_lv.requires_grad:
            total = total + 0.01 * (max_lv.sum() - min_lv.sum())
        return total, per_member.detach()

    @torch.no_grad()
    def member_mse(self, x: Tensor, target: Tensor, chunk: int = 16384) -> Tensor:
        """Mean squared error of each member's mean on normalised ``x[B, in]``, ``target[B, G]``:
        ``[E]``, averaged over rows and target dimensions (computed in chunks of rows)."""
        total = torch.zeros(self.ensemble_size, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], chunk):
            mean, _ = self.forward(x[start:start + chunk])
            err = (mean[..., : self.gauss_dim] - target[start:start + chunk]) ** 2
            total += err.sum((1, 2)).to(torch.float64)
        return (total / (x.shape[0] * self.gauss_dim)).to(torch.float32)

    def extra_repr(self) -> str:
        return (
            f"obs_dim={self.obs_dim}, action_dim={self.action_dim}, ensemble_size={self.ensemble_size}, "
            f"hidden={self.num_layers}x{self.hidden_size} {self.activation}, probabilistic={self.probabilistic}, "
            f"num_elites={self.num_elites}, learn_reward={self.learn_reward}, "
            f"learn_termination={self.learn_termination}"
        )


def make_model(kind: str, obs_dim: int, action_dim: int, **kwargs) -> EnsembleModel:
    """``"mlp"``: one deterministic network trained with MSE (the v0.5 and v1.5 model, Nagabandi et al. 2018,
    mbrl-lib's gaussian_mlp.yaml architecture with ``deterministic``); ``"ensemble"``: the PETS
    probabilistic ensemble. Keyword arguments override the defaults of ``EnsembleModel``."""
    key = kind.lower().replace("-", "_")
    if key == "mlp":
        kwargs = {"ensemble_size": 1, "probabilistic": False, **kwargs}
    elif key not in ("ensemble", "pe", "probabilistic_ensemble"):
        raise ValueError(f"Unknown model kind {kind!r}; choose 'mlp' or 'ensemble'")
    return EnsembleModel(obs_dim, action_dim, **kwargs)
