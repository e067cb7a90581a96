"""Soft actor-critic (Haarnoja et al. 2018): the model-free baseline and MBPO's policy optimiser.

One gradient update, read top to bottom (B transitions (s, a, r, s', d) from the buffer):
1. critic: y = r + gamma (1 - d) [min_i Q_target_i(s', a') - alpha log pi(a'|s')],  a' ~ pi(.|s');
   L_Q = 1/2 sum_i mean (Q_i(s, a) - y)^2 over the twin critics i = 1, 2;
2. actor: L_pi = mean [alpha log pi(a~|s) - min_i Q_i(s, a~)],  a~ ~ pi(.|s) (reparameterised);
3. temperature: L_alpha = -mean [log alpha (log pi(a~|s) + H_target)],  H_target = -dim(A);
4. target networks: theta_target <- (1 - tau) theta_target + tau theta.
As in the reference implementation (softlearning, where one ``session.run`` applies all three
losses), the three gradients are taken at the same parameters and applied in one optimiser
step, so an update is one backward pass. ``utd`` (G) such updates follow every environment step.

High update-to-data ratios overfit the critics early ("primacy bias") and make them diverge;
two remedies are options: ``critic_layernorm`` (+ ``critic_dropout``) and ``reset_every``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelrl.agents.base import (
    SAC_LOG_STD_BOUNDS,
    Agent,
    AgentConfig,
    charge,
    clocks,
    new_timing,
    stream_seed,
    timing_columns,
)
from modelrl.device import compiled, generator_state, load_generator_state, resolve_device
from modelrl.models.layers import EnsembleMLP, uniform_fan_in_

LOG_STD_MIN, LOG_STD_MAX = SAC_LOG_STD_BOUNDS


@dataclasses.dataclass
class SACConfig(AgentConfig):
    """Defaults are those of Haarnoja et al. 2018 ("SAC: algorithms and applications", Table 1)
    where Stable-Baselines3's SAC agrees; where they differ the comment says which we took."""

    explore_steps: int = 100
    """Uniform random steps before the first update (SB3 learning_starts = 100; softlearning: 1000)."""
    utd: int = 1
    """G, gradient updates per environment step (the update-to-data ratio); SAC paper and SB3: 1."""
    batch_size: int = 256  # SAC paper Table 1 / SB3: 256
    gamma: float = 0.99  # SAC paper Table 1 / SB3: discount 0.99
    tau: float = 0.005  # SAC paper Table 1 / SB3: target smoothing 0.005, every update
    lr: float = 3e-4  # SAC paper Table 1 / SB3: Adam, 3e-4 for actor, critics and temperature
    hidden_size: int = 256  # SAC paper Table 1 / SB3 net_arch [256, 256]
    num_layers: int = 2  # SAC paper Table 1 / SB3: 2 hidden layers, ReLU
    init_alpha: float = 1.0  # SB3 ent_coef "auto" starts at 1.0; softlearning: log alpha = 0
    learn_alpha: bool = True  # SAC v2 (Haarnoja et al. 2018b): automatic entropy tuning
    target_entropy: float | None = None
    """H_target; None: -dim(A) (SAC paper Sec. 5 / SB3 "auto")."""
    critic_layernorm: bool = False
    """LayerNorm after every hidden layer of the critics, for stability at high UTD (Ball et al.
    2023, RLPD; Hiraoka et al. 2022, DroQ). Off in SAC."""
    critic_dropout: float = 0.0
    """Dropout in the critics' hidden layers (DroQ, Hiraoka et al. 2022: 0.01 with LayerNorm). Off in SAC."""
    reset_every: int = 0
    """Re-initialise actor, critics, targets and optimiser state every this many gradient updates
    (Nikishin et al. 2022, "The primacy bias in deep RL": SAC resets every 2e5 updates); 0: never."""
    compile: bool = False
    """ours: torch.compile the update's losses (the policy noise drawn outside, in the same order). Off: on this
    project's CPU the compiled update was slower (docs/sac.md, "Speed"); the device check measures it on a GPU."""

    LEGACY_FIELDS: ClassVar[frozenset[str]] = frozenset({"device"})  # now the run-level --device

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The SAC paper / SB3 setting (the defaults above).
        "sac": {},
        # A high-UTD SAC: G = 20 with the two remedies (LayerNorm critics as RLPD, periodic resets
        # as Nikishin et al. 2022, who reset every 2e5 updates at replay ratio 32 on DMC).
        "high-utd": {"utd": 20, "critic_layernorm": True, "reset_every": 200_000},
        # DroQ (Hiraoka et al. 2022): dropout 0.01 + LayerNorm critics, G = 20.
        "droq": {"utd": 20, "critic_layernorm": True, "critic_dropout": 0.01},
    }


def validate_sac_config(c: SACConfig) -> None:
    """Clear errors for settings that cannot work."""
    if c.utd < 1:
        raise ValueError(f"utd (G, gradient updates per env step) must be >= 1, got {c.utd}")
    if c.batch_size < 1 or c.hidden_size < 1 or c.num_layers < 1:
        raise ValueError(f"batch_size, hidden_size, num_layers must be >= 1; got {c.batch_size}, "
                         f"{c.hidden_size}, {c.num_layers}")
    if not 0.0 < c.tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {c.tau}")
    if not 0.0 <= c.gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {c.gamma}")
    if c.lr <= 0 or c.init_alpha <= 0:
        raise ValueError(f"lr and init_alpha must be > 0, got {c.lr} and {c.init_alpha}")
    if not 0.0 <= c.critic_dropout < 1.0:
        raise ValueError(f"critic_dropout must be in [0, 1), got {c.critic_dropout}")
    if c.reset_every < 0:
        raise ValueError(f"reset_every must be >= 0 (0: never), got {c.reset_every}")
    if c.explore_steps < 0:
        raise ValueError(f"explore_steps must be >= 0, got {c.explore_steps}")


# -- networks ---------------------------------------------------------------------------------
class TwinQ(EnsembleMLP):
    """N critics Q_i(s, a) evaluated together: weights ``[N, in, out]``, one batched matmul per layer
    (``EnsembleMLP``), ReLU; optional LayerNorm and dropout in the hidden layers (RLPD, DroQ)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, num_q: int = 2, layernorm: bool = False,
                 dropout: float = 0.0) -> None:
        # bias_in_matmul=False: bmm, then + bias, measured faster than baddbmm on CPU
        super().__init__([in_dim] + [hidden] * layers + [1], num_q, "relu", layernorm=layernorm, dropout=dropout,
                         bias_in_matmul=False)
        self.legacy_names = {  # parameter names before EnsembleMLP
            **{f"{kind}.{i}": f"layers.{i}.{new}" for kind, new in (("weights", "weight"), ("biases", "bias"))
               for i in range(layers + 1)},
            **{f"{kind}.{i}": f"norms.{i}.{new}" for kind, new in (("ln_weight", "weight"), ("ln_bias", "bias"))
               for i in range(layers if layernorm else 0)}}

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases (SB3's init)."""
        super().reset_parameters(generator)

    def forward(self, x: Tensor, members: Tensor | None = None, params: Sequence[Tensor] | None = None) -> Tensor:
        """``x[B, in]`` -> ``Q[N, B]``. ``params`` (e.g. ``detached_params()``) replace the module's own;
        ``members`` picks critics, as in ``EnsembleMLP.forward``."""
        return super().forward(x, members, params).squeeze(-1)  # x is shared by the N critics


class GaussianActor(nn.Module):
    """pi(a|s): an MLP giving the mean and log std of a Gaussian, squashed by tanh into [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        sizes = [obs_dim] + [hidden] * layers
        self.body = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden, 2 * action_dim)  # mean and log std
        self.action_dim = action_dim

    def reset_parameters(self, gen: torch.Generator) -> None:
        for layer in [*self.body, self.head]:
            uniform_fan_in_(layer.weight, layer.in_features, gen)  # SB3's init (PyTorch's nn.Linear default)
            uniform_fan_in_(layer.bias, layer.in_features, gen)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        h = obs
        for layer in self.body:
            h = F.relu(layer(h))
        mean, log_std = self.head(h).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: Tensor, gen: torch.Generator | None, eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``a = tanh(mean + std * eps)`` and ``log pi(a|s)`` (the tanh change of variables in its stable
        form, log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))); ``eps`` replaces the draw from ``gen``."""
        mean, log_std = self(obs)
        if eps is None:
            eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype, device=mean.device)
        u = torch.addcmul(mean, log_std.exp(), eps)
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)
                    - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob


# -- the learner ------------------------------------------------------------------------------
class SAC:
    """Networks, optimiser and the gradient update; agents (SAC, MBPO) feed it batches."""

    def __init__(self, obs_dim: int, action_dim: int, c: SACConfig, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        validate_sac_config(c)
        self.c = c
        self.device = resolve_device(device)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(stream_seed(seed, "sac.updates"))
        self._init_gen = torch.Generator()
        self._init_gen.manual_seed(stream_seed(seed, "sac.init"))
        self.actor = GaussianActor(obs_dim, action_dim, c.hidden_size, c.num_layers).to(self.device)
        self.critic = TwinQ(obs_dim + action_dim, c.hidden_size, c.num_layers, 2, c.critic_layernorm,
                            c.critic_dropout).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(c.init_alpha), device=self.device),
                                      requires_grad=c.learn_alpha)
        self.target_entropy = float(-action_dim if c.target_entropy is None else c.target_entropy)
        self.updates = 0
        self._reset_networks()
        self._loss_fn = compiled(self._loss, c.compile)

    def _reset_networks(self) -> None:
        """Fresh weights for actor and critics, targets = critics, fresh optimiser state (alpha is kept)."""
        with torch.no_grad():
            self.actor.reset_parameters(self._init_gen)
            self.critic.reset_parameters(self._init_gen)
            for t, s in zip(self.critic_target.parameters(), self.critic.parameters()):
                t.copy_(s)
        self._critic_params: list[Tensor] = list(self.critic.parameters())
        self._target_params: list[Tensor] = list(self.critic_target.parameters())
        params = list(self.actor.parameters()) + self._critic_params
        if self.c.learn_alpha:
            params.append(self.log_alpha)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(params, lr=self.c.lr, fused=fused)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1)
        if deterministic:
            a = torch.tanh(self.actor(o)[0])
        else:
            a = self.actor.sample(o, self.gen)[0]
        return a[0].cpu().numpy()

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """``act`` for a batch of observations ``[B, S]`` -> ``[B, A]``."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device).reshape(-1, self.obs_dim)
        a = torch.tanh(self.actor(o)[0]) if deterministic else self.actor.sample(o, self.gen)[0]
        return a.cpu().numpy()

    @torch.no_grad()
    def policy(self, obs: Tensor) -> Tensor:
        """Stochastic actions for a batch of states (MBPO's model rollouts)."""
        return self.actor.sample(obs, self.gen)[0]

    def update(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor,
               terminated: Tensor) -> dict[str, Tensor]:
        """One SAC update on a batch (tensors on the device); returns detached losses."""
        shape = (obs.shape[0], self.action_dim)  # the two policy draws, in the order the losses use them
        eps_next = torch.randn(shape, generator=self.gen, device=self.device)
        eps = torch.randn(shape, generator=self.gen, device=self.device)
        loss, critic_loss, actor_loss, alpha, logp, q = self._loss_fn(obs, action, reward, next_obs, terminated,
                                                                      eps_next, eps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        c = self.c
        with torch.no_grad():  # 4. Polyak averaging of the target critics
            torch._foreach_lerp_(self._target_params, self._critic_params, c.tau)
        self.updates += 1
        if c.reset_every and self.updates % c.reset_every == 0:
            self._reset_networks()
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                "entropy": -logp.detach().mean(), "q": q.detach().mean()}

    def _loss(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor,
              eps_next: Tensor, eps: Tensor) -> tuple[Tensor, ...]:
        """The three losses of one update, the policy's noise given (what ``compile`` compiles)."""
        c = self.c
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():  # 1. y = r + gamma (1 - d) [min_i Q_target_i(s', a') - alpha log pi(a'|s')]
            next_a, next_logp = self.actor.sample(next_obs, None, eps_next)
            q_next = self.critic_target(torch.cat([next_obs, next_a], -1)).min(0).values
            y = reward + c.gamma * (1.0 - terminated) * (q_next - alpha * next_logp)
        q = self.critic(torch.cat([obs, action], -1))  # [2, B]
        critic_loss = 0.5 * (q - y).square().mean(1).sum()
        pi, logp = self.actor.sample(obs, None, eps)  # 2. actor, through the critics but not into them
        q_pi = self.critic(torch.cat([obs, pi], -1), params=self.critic.detached_params()).min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        loss = critic_loss + actor_loss
        if c.learn_alpha:  # 3. temperature
            loss = loss - (self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        return loss, critic_loss, actor_loss, alpha, logp, q

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "gen": generator_state(self.gen),
                "init_gen": generator_state(self._init_gen), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        optimizer = state["optimizer"]
        if any(name in self.critic.legacy_names for name in state["critic"]):
            optimizer = self._renumbered(optimizer, list(state["critic"]))
        self.optimizer.load_state_dict(optimizer)
        load_generator_state(self.gen, state["gen"])
        load_generator_state(self._init_gen, state["init_gen"])
        self.updates = int(state["updates"])

    def _renumbered(self, optimizer: dict[str, Any], old_critic: list[str]) -> dict[str, Any]:
        """An optimiser state written before EnsembleMLP, whose critic parameters came in another order
        (all weights, all biases, LayerNorm weights, LayerNorm biases): its entries moved to the present order."""
        first = sum(1 for _ in self.actor.parameters())
        now = [name for name, _ in self.critic.named_parameters()]
        moved = {first + i: first + now.index(self.critic.legacy_names[name]) for i, name in enumerate(old_critic)}
        return {**optimizer, "state": {moved.get(i, i): s for i, s in optimizer["state"].items()}}


def batch_to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> tuple[Tensor, ...]:
    """A replay-buffer batch as (obs, action, reward, next_obs, terminated) float32 tensors."""
    return tuple(torch.as_tensor(batch[k], device=device).float()
                 for k in ("obs", "action", "reward", "next_obs", "terminated"))


class SACAgent(Agent):
    """SAC on the real replay buffer: G updates after every environment step past ``explore_steps``."""

    config: SACConfig

    def __init__(self, env: gymnasium.Env, config: SACConfig, seed: int = 0, device: str = "auto") -> None:
        super().__init__(env, config, seed, device)
        self.sac = SAC(self.obs_dim, self.action_dim, config, seed=seed, device=self.device)
        self.device = self.sac.device
        self.timing = new_timing(("policy",))  # seconds in gradient updates (benchmarks report the split)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.sac.act(obs, deterministic=deterministic)

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.sac.act_batch(obs, deterministic=deterministic)

    def update(self, buffer, step: int) -> dict[str, float]:
        """G updates on G fresh uniform batches (sampled together, one conversion to torch)."""
        c = self.config
        if step <= c.explore_steps:
            return {}
        mark = clocks()
        data = batch_to_tensors(buffer.sample(c.utd * c.batch_size), self.sac.device)
        losses: dict[str, Tensor] = {}
        for g in range(c.utd):
            rows = slice(g * c.batch_size, (g + 1) * c.batch_size)
            losses = self.sac.update(*(t[rows] for t in data))
        out: dict[str, Any] = dict(losses)  # tensors: the runner averages them per logged row, no sync here
        charge(self.timing, "policy", mark)
        out.update(timing_columns(self.timing))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sac": self.sac.state_dict(), "timing": dict(self.timing)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        if "timing" in state:
            self.timing.update(state["timing"])
        else:  # checkpoints written before the timing dict: top-level policy_s (and later cpu_policy_s)
            self.timing.update(policy_s=float(state["policy_s"]), cpu_policy_s=float(state.get("cpu_policy_s", 0.0)))
