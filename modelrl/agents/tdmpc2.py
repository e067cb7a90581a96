"""TD-MPC2 (Hansen, Su, Wang, ICLR 2024, arXiv 2310.16828): the single-task online algorithm.

What it changes from TD-MPC (``modelrl.agents.tdmpc``), each as the official code does it
(github.com/nicklashansen/tdmpc2 at e9f5932; ``tdmpc2/tdmpc2.py`` cited as "official"):
- the world model (``modelrl.models.world_model.WorldModel``): LayerNorm + Mish layers, a SimNorm latent, reward and
  K = 5 Q-functions (dropout 0.01) regressed as two-hot distributions over 101 bins in symlog space;
- the model loss (official ``_update``): consistency of d(z_t, a_t) with the *online* encoder's next latent (no
  target encoder), cross-entropy of reward and of every Q head against the TD target
  r + gamma (1 - terminated) min of two random target Q heads at (z', pi(z')), rho^t weights, each term divided by H
  (and the values by K), gradients clipped at 20, the encoder at 0.3 x the learning rate;
- the policy (official ``update_pi``): a tanh-squashed Gaussian maximising rho^t-weighted
  Q / S + entropy_coef x entropy, Q the mean of two random heads and S a running 5-95% percentile range of Q
  (``RunningScale``, at least 1); only the Q heads have a target copy, moved by tau every update;
- planning (official ``_plan``): a fixed horizon 3, no momentum, the std clamped to [0.05, 2] from the first step
  (no schedules), policy trajectories drawn with the policy's own std; the value of a candidate is the mean of
  two random Q heads;
- the discount from the episode length (official ``_get_discount``), seed steps max(1000, 5 episodes)
  (``envs/__init__.py``), uniform replay, 2 more iterations when the action has 20 or more dimensions.

What it shares with TD-MPC is the code, not a copy: ``TDMPC2Agent`` is a ``TDMPCAgent`` whose model, losses, value
estimate and planner settings are TD-MPC2's; the planning loop (the sampling core, warm start, elite draw,
lockstep batches), the update schedule (seed steps, then one update per agent step), terminations, sub-trajectory
replay and checkpoints are TD-MPC's.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modelrl.agents.base import Agent, AgentConfig, stream_seed
from modelrl.agents.tdmpc import TDMPCAgent, _dmc_domain
from modelrl.data.subtraj import SubTrajectorySampler
from modelrl.device import compiled
from modelrl.envs.rewards import can_terminate
from modelrl.models.layers import EnsembleMLP
from modelrl.models.world_model import WorldModel
from modelrl.planners.sampling import SamplingSettings

# Official tdmpc2/common/__init__.py MODEL_SIZE: the model sizes (millions of parameters) as presets.
MODEL_SIZES: dict[str, dict[str, Any]] = {
    "1m": {"enc_dim": 256, "mlp_dim": 384, "latent_dim": 128, "num_enc_layers": 2, "num_q": 2},
    "5m": {"enc_dim": 256, "mlp_dim": 512, "latent_dim": 512, "num_enc_layers": 2},
    "19m": {"enc_dim": 1024, "mlp_dim": 1024, "latent_dim": 768, "num_enc_layers": 3},
    "48m": {"enc_dim": 1792, "mlp_dim": 1792, "latent_dim": 768, "num_enc_layers": 4},
    "317m": {"enc_dim": 4096, "mlp_dim": 4096, "latent_dim": 1376, "num_enc_layers": 5, "num_q": 8},
}


def heuristic_discount(episode_length: int | None, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's discount from the episode length (official ``_get_discount``): (L/d - 1) / (L/d) clipped to
    [low, high]; an episode of unknown length counts as infinite (``high``)."""
    if episode_length is None:
        return high
    frac = episode_length / denom
    return min(max((frac - 1.0) / frac, low), high)


def percentile_range(x: Tensor, low: float = 5.0, high: float = 95.0) -> Tensor:
    """The ``high`` minus the ``low`` percentile of ``x`` (linear interpolation between order statistics, as the
    official ``RunningScale._percentile``; ``torch.quantile``'s default)."""
    q = torch.quantile(x.detach().flatten().float(), torch.tensor([low / 100, high / 100], device=x.device))
    return (q[1] - q[0]).to(x.dtype)


def episode_length_of(env: gymnasium.Env) -> int | None:
    """Agent steps in one episode of ``env`` (its time limit over its action repeat); None when it has none."""
    limit = env.spec.max_episode_steps if env.spec is not None else None
    if limit is None:
        return None
    try:
        repeat = int(env.get_wrapper_attr("repeat"))
    except AttributeError:
        repeat = 1
    return math.ceil(limit / repeat)


@dataclasses.dataclass
class TDMPC2Config(AgentConfig):
    """TD-MPC2; defaults from the official ``tdmpc2/config.yaml`` (state observations, single task) and the 5M
    model of ``common/__init__.py`` (the official default ``model_size``)."""

    explore_steps: int | None = None  # type: ignore[assignment]  # resolved to an int when the agent is built
    """Seed steps (agent steps) of uniform random actions; None: official max(1000, 5 x episode length)
    (``envs/__init__.py``: ``cfg.seed_steps = max(1000, 5*cfg.episode_length)``)."""
    # -- planning
    horizon: int = 3  # official: horizon 3
    iterations: int = 6  # official: iterations 6 (+2 when the action has >= 20 dimensions, applied per task)
    num_samples: int = 512  # official: num_samples 512 (policy trajectories included)
    num_elites: int = 64  # official: num_elites 64
    num_pi_trajs: int = 24  # official: num_pi_trajs 24
    min_std: float = 0.05  # official: min_std 0.05
    max_std: float = 2.0  # official: max_std 2
    temperature: float = 2.0
    """lambda in w = exp((G - max G) / lambda); official: temperature 0.5 used as a multiplier, exp(0.5 (G - max)),
    so lambda = 2."""
    # -- learning
    batch_size: int = 256  # official: batch_size 256
    lr: float = 3e-4  # official: lr 3e-4
    enc_lr_scale: float = 0.3  # official: enc_lr_scale 0.3
    reward_coef: float = 0.1  # official: reward_coef 0.1
    value_coef: float = 0.1  # official: value_coef 0.1
    termination_coef: float = 1.0  # official: termination_coef 1
    consistency_coef: float = 20.0  # official: consistency_coef 20
    rho: float = 0.5  # official: rho 0.5
    grad_clip_norm: float = 20.0  # official: grad_clip_norm 20
    tau: float = 0.01  # official: tau 0.01 (EMA of the target Q heads, every update)
    discount: float | None = None
    """None: official heuristic from the episode length (``heuristic_discount``); a number fixes it."""
    discount_denom: float = 5.0  # official: discount_denom 5
    discount_min: float = 0.95  # official: discount_min 0.95
    discount_max: float = 0.995  # official: discount_max 0.995
    entropy_coef: float = 1e-4  # official: entropy_coef 1e-4
    log_std_min: float = -10.0  # official: log_std_min -10
    log_std_max: float = 2.0  # official: log_std_max 2
    scale_tau: float = 0.01  # official: RunningScale.update lerps by cfg.tau (0.01)
    updates_per_step: int = 1  # official online_trainer.py: one update per agent step after the seed steps
    pretrain_updates: int | None = None
    """Updates at the end of the seed steps; None: as many as seed steps (official online_trainer.py)."""
    # -- architecture (official MODEL_SIZE[5]; the other sizes are presets)
    latent_dim: int = 512  # official: latent_dim 512
    enc_dim: int = 256  # official: enc_dim 256
    mlp_dim: int = 512  # official: mlp_dim 512
    num_enc_layers: int = 2  # official: num_enc_layers 2
    num_q: int = 5  # official: num_q 5
    dropout: float = 0.01  # official: dropout 0.01
    simnorm_dim: int = 8  # official: simnorm_dim 8
    num_bins: int = 101  # official: num_bins 101
    vmin: float = -10.0  # official: vmin -10
    vmax: float = 10.0  # official: vmax +10
    episodic: bool | None = None
    """Tasks that end by termination (official ``episodic``, default false): TD targets cut at terminations, a
    termination head, planning that stops counting after a predicted termination. None: on where the env can
    terminate (``modelrl.envs.can_terminate``: off for DeepMind Control, Pendulum, HalfCheetah, ...)."""
    flush_denormal: bool = True  # ours: CPU speed (see ``modelrl.agents.tdmpc.flush_denormal``)
    compile: bool = False  # ours: torch.compile the candidates' latent rollout and the update's losses
    matmul_precision: str = "high"
    """float32 matmuls on CUDA: official ``torch.set_float32_matmul_precision('high')`` (``tdmpc2/train.py``,
    line 23), TF32 on GPUs that have it. Set for the process when the agent is built on a CUDA device; on the
    CPU it is left alone (this CPU's matmuls ran the same at every setting, measured)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},  # the official defaults: the 5M model
        **MODEL_SIZES,
        # ours, for a laptop CPU: the 1M model's two Q heads with 128-unit layers and a 64-entry latent (8 SimNorm
        # groups), half the samples, elites and policy trajectories, 4 iterations; everything else official.
        # About 5x cheaper per agent step than the 1m preset here (docs/tdmpc2.md, "Speed").
        "cpu": {"enc_dim": 128, "mlp_dim": 128, "latent_dim": 64, "num_enc_layers": 2, "num_q": 2,
                "num_samples": 256, "num_elites": 32, "num_pi_trajs": 12, "iterations": 4},
    }

    @classmethod
    def default_action_repeat(cls, env_id: str | None) -> int:
        """Official: 2 on every DeepMind Control task (``envs/dmcontrol.py``, ``DMControlWrapper.step``); 1 else."""
        return 1 if _dmc_domain(env_id) is None else 2


class TDMPC2Agent(TDMPCAgent):
    """TD-MPC2's world model, losses and planner settings on TD-MPC's planning loop and update schedule."""

    config: TDMPC2Config  # type: ignore[assignment]  # TD-MPC2's own config, not a TDMPCConfig
    model: WorldModel  # type: ignore[assignment]
    target: EnsembleMLP  # type: ignore[assignment]  # the target copy of the Q heads only

    def __init__(self, env: gymnasium.Env, config: TDMPC2Config, seed: int = 0, device: str = "auto") -> None:
        Agent.__init__(self, env, config, seed, device)  # TD-MPC's __init__ builds TOLD: not called
        c = config
        if not (np.allclose(self.action_space.low, -1) and np.allclose(self.action_space.high, 1)):
            raise ValueError("TD-MPC2 acts in [-1, 1]; build the env with modelrl.make_env")
        if not 0 <= c.num_pi_trajs < c.num_samples:
            raise ValueError(f"need 0 <= num_pi_trajs < num_samples, got {c.num_pi_trajs} and {c.num_samples}")
        if not 1 <= c.num_elites <= c.num_samples:
            raise ValueError(f"need 1 <= num_elites <= num_samples, got {c.num_elites} and {c.num_samples}")
        for name in ("horizon", "iterations", "num_samples", "batch_size", "num_bins"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
        if c.temperature <= 0 or not 0 < c.min_std <= c.max_std:
            raise ValueError("need temperature > 0 and 0 < min_std <= max_std")
        if c.discount is not None and not 0 < c.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {c.discount}")
        if c.matmul_precision not in ("highest", "high", "medium"):
            raise ValueError(f"matmul_precision must be 'highest', 'high' or 'medium', got {c.matmul_precision!r}")
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision(c.matmul_precision)
        # resolved here, so config.yaml records what ran
        self.episode_length = episode_length_of(env)
        resolved: dict[str, Any] = {}
        if c.episodic is None:
            resolved["episodic"] = can_terminate(self.env_id) is not False
        if c.discount is None:
            resolved["discount"] = heuristic_discount(self.episode_length, c.discount_denom, c.discount_min,
                                                      c.discount_max)
        if c.explore_steps is None:
            resolved["explore_steps"] = max(1000, 5 * (self.episode_length or 0))
        if resolved:
            c = self.config = dataclasses.replace(c, **resolved)
        assert c.discount is not None and c.explore_steps is not None and c.episodic is not None
        # official: cfg.iterations += 2*int(cfg.action_dim >= 20) (a heuristic for large action spaces)
        self.iterations = c.iterations + (2 if self.action_dim >= 20 else 0)
        self.model = WorldModel(self.obs_dim, self.action_dim, latent_dim=c.latent_dim, enc_dim=c.enc_dim,
                                mlp_dim=c.mlp_dim, num_enc_layers=c.num_enc_layers, num_q=c.num_q, dropout=c.dropout,
                                simnorm_dim=c.simnorm_dim, num_bins=c.num_bins, vmin=c.vmin, vmax=c.vmax,
                                log_std_min=c.log_std_min, log_std_max=c.log_std_max, termination=c.episodic,
                                seed=seed).to(self.device).eval()
        self.target = copy.deepcopy(self.model.q).requires_grad_(False).eval()  # official: only the Qs have targets
        m = self.model
        fused = self.device.type in ("cpu", "cuda")
        encoder = list(m.encoder.parameters()) + list(m.enc_norm.parameters())
        parts: list[torch.nn.Module] = [m.dyn_rew, m.dyn_norm, m.q] + ([m.term] if m.term is not None else [])
        rest = [p for part in parts for p in part.parameters()]
        groups: list[dict[str, Any]] = [{"params": encoder, "lr": c.lr * c.enc_lr_scale}, {"params": rest}]
        self.optim = torch.optim.Adam(groups, lr=c.lr, fused=fused)
        self.pi_optim = torch.optim.Adam(m.policy.parameters(), lr=c.lr, eps=1e-5, fused=fused)  # official eps 1e-5
        self.plan_gen = torch.Generator(self.device).manual_seed(stream_seed(seed, "tdmpc2.planning"))
        self.update_gen = torch.Generator(self.device).manual_seed(stream_seed(seed, "tdmpc2.updates"))
        self._low = torch.full((self.action_dim,), -1.0, device=self.device)
        self._high = torch.full((self.action_dim,), 1.0, device=self.device)
        self.scale = torch.ones((), device=self.device)  # official RunningScale: starts at 1
        self.sampler: SubTrajectorySampler | None = None
        self._sampler_state: dict | None = None
        self.step = 0
        self._checked = 0
        self.num_updates = 0
        self.std_floor = c.min_std
        self._prev_mean: Tensor | None = None
        self._t0 = True
        self._model_params = [p for group in self.optim.param_groups for p in group["params"]]
        self._value_fn = compiled(self._latent_value, c.compile)
        self._model_loss_fn = compiled(self._world_model_loss, c.compile)
        self._pi_loss_fn = compiled(self._policy_loss, c.compile)

    # -- planning: TD-MPC's loop with TD-MPC2's value, policy trajectories and settings --------------------
    def planning_horizon(self) -> int:
        return self.config.horizon  # official: no horizon schedule

    def scheduled_std_floor(self, step: int) -> float:
        return self.config.min_std  # official: std clamped to [min_std, max_std] from the start

    def planner_settings(self) -> SamplingSettings:
        """Official ``_plan``: softmax-weighted top-k elites, no momentum, std refitted and clamped."""
        c = self.config
        return SamplingSettings(num_samples=c.num_samples - c.num_pi_trajs, iterations=self.iterations,
                                num_elites=c.num_elites, weighting="softmax", temperature=c.temperature, momentum=0.0,
                                min_std=c.min_std, max_std=c.max_std, noise_order="time")

    def _policy_actions(self, z0: Tensor, h: int) -> Tensor | None:
        """``num_pi_trajs`` rollouts of the policy prior (its own std) through d: ``[H, B, N_pi, A]``."""
        c, b, dim = self.config, z0.shape[0], self.action_dim
        n = c.num_pi_trajs
        if n <= 0:
            return None
        out = z0.new_empty(h, b, n, dim)
        z = z0.unsqueeze(1).expand(b, n, -1).reshape(b * n, -1)
        for t in range(h):
            a = self.model.pi(z, self.plan_gen).action
            out[t] = a.view(b, n, dim)
            if t < h - 1:  # official: no step after the last action
                z, _ = self.model.next(z, a)
        return out

    @torch.no_grad()
    def estimate_value(self, z: Tensor, actions: Tensor) -> Tensor:
        """G = sum_t gamma^t R(z_t, a_t) + gamma^H Q_avg(z_H, pi(z_H)) for ``actions[H, N, A]`` from ``z[N, L]``."""
        noise = torch.randn((z.shape[0], self.action_dim), generator=self.plan_gen, device=self.device)
        return self._value_fn(z, actions, noise, self.model.draw_pick(self.plan_gen))

    def _latent_value(self, z: Tensor, actions: Tensor, noise: Tensor, pick: Tensor | None) -> Tensor:
        """``estimate_value`` with its random draws given (official ``_estimate_value``)."""
        c, m = self.config, self.model
        assert pick is not None and c.discount is not None
        g, discount = z.new_zeros(z.shape[0]), 1.0
        alive = None  # episodic: 0 once a termination is predicted (probability > 0.5)
        for a in actions:
            z, r = m.next(z, a)
            r = m.two_hot.decode(r)
            g = g + discount * (r if alive is None else alive * r)
            discount *= c.discount
            if c.episodic:
                goes_on = (m.termination_logit(z) <= 0).to(z.dtype)
                alive = goes_on if alive is None else alive * goes_on
        value = m.q_value(z, m.pi(z, noise=noise).action, pick, reduce="avg")
        return g + discount * (value if alive is None else alive * value)

    # -- learning -------------------------------------------------------------------------------------
    def _make_sampler(self, buffer) -> SubTrajectorySampler:
        self.sampler = sampler = SubTrajectorySampler(buffer.capacity, self.config.horizon, prioritized=False,
                                                      seed=stream_seed(self.seed, "tdmpc2.sampler"))
        if self._sampler_state is not None:
            sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        return sampler

    def _update_once(self, buffer) -> dict[str, float]:
        c, model, gen = self.config, self.model, self.update_gen
        _, t = self._sample_batch(buffer)  # uniform replay: the importance weights are all 1
        dev = self.device
        obs, action, reward, next_obs, terminated = (t[k] for k in ("obs", "action", "reward", "next_obs",
                                                                     "terminated"))
        horizon, b = action.shape[:2]
        rho = c.rho ** torch.arange(horizon + 1, dtype=torch.float32, device=dev)  # [H + 1]

        noise = torch.randn((horizon * b, self.action_dim), generator=gen, device=dev)  # the TD target's policy draw
        model.train()  # dropout in the Q heads (official: train mode during the update, eval while planning)
        losses = self._model_loss_fn(obs, action, reward, next_obs, terminated, rho, noise, model.draw_pick(gen))
        consistency, reward_loss, value_loss, termination_loss, total, zs = losses
        self.optim.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._model_params, c.grad_clip_norm)
        self.optim.step()

        pi_loss, entropy = self._update_pi(zs.detach(), rho)
        with torch.no_grad():
            for p, p_t in zip(model.q.parameters(), self.target.parameters()):
                p_t.lerp_(p, c.tau)
        model.eval()
        self.num_updates += 1
        # tensors: the runner averages them over the updates of a logged row and reads them once
        return {"consistency_loss": consistency.detach(), "reward_loss": reward_loss.detach(),
                "value_loss": value_loss.detach(), "pi_loss": pi_loss, "pi_scaled_entropy": entropy,
                **({"termination_loss": termination_loss.detach()} if c.episodic else {}),
                "total_loss": total.detach(), "grad_norm": grad_norm.detach(), "pi_scale": self.scale.clone(),
                "updates": float(self.num_updates)}

    def _world_model_loss(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor,
                          rho: Tensor, noise: Tensor, pick: Tensor) -> tuple[Tensor, ...]:
        """The world model's loss on a batch of sub-trajectories (official ``_update``), its draws given:
        (consistency, reward, value, termination losses, total, z_0..z_H)."""
        c, m = self.config, self.model
        assert c.discount is not None
        horizon, b = action.shape[:2]
        with torch.no_grad():  # targets: the online encoder's next latents and the TD targets
            next_z = m.h(next_obs.reshape(horizon * b, -1))
            next_q = m.q_value(next_z, m.pi(next_z, noise=noise).action, pick, reduce="min", target=self.target)
            td_target = reward + c.discount * (1.0 - terminated) * next_q.view(horizon, b)
            next_z = next_z.view(horizon, b, -1)
        z = m.h(obs)
        zs, reward_logits = [z], []
        consistency = z.new_zeros(())
        for t in range(horizon):  # latent rollout z_{t+1} = d(z_t, a_t)
            z, r = m.next(z, action[t])
            consistency = consistency + rho[t] * F.mse_loss(z, next_z[t])
            zs.append(z)
            reward_logits.append(r)
        z_all = torch.stack(zs)  # [H + 1, B, L]
        w = rho[:horizon]
        reward_ce = m.two_hot.cross_entropy(torch.stack(reward_logits), reward)  # [H, B]
        q = m.q_logits(z_all[:-1].reshape(horizon * b, -1), action.reshape(horizon * b, -1))  # [K, H * B, bins]
        value_ce = m.two_hot.cross_entropy(q.view(m.num_q, horizon, b, -1), td_target.unsqueeze(0))  # [K, H, B]
        consistency = consistency / horizon
        reward_loss = (w * reward_ce.mean(1)).sum() / horizon
        value_loss = (w * value_ce.mean(2)).sum() / (horizon * m.num_q)
        total = c.consistency_coef * consistency + c.reward_coef * reward_loss + c.value_coef * value_loss
        if c.episodic:  # binary cross-entropy of the head on z_1..z_H, a mean over steps and batch (no rho)
            logits = m.termination_logit(z_all[1:].reshape(horizon * b, -1)).view(horizon, b)
            termination = F.binary_cross_entropy_with_logits(logits, terminated)
            total = total + c.termination_coef * termination
        else:
            termination = total.new_zeros(())
        return consistency, reward_loss, value_loss, termination, total, z_all

    def _policy_loss(self, z: Tensor, rho: Tensor, noise: Tensor, pick: Tensor, scale: Tensor) -> tuple[Tensor, ...]:
        """The policy loss on ``z[H + 1, B, L]`` (official ``update_pi``), its draws given: (loss, the Q values at
        z_0 that update the scale, the mean entropy term)."""
        c, m = self.config, self.model
        steps, b = z.shape[:2]
        flat = z.reshape(steps * b, -1)
        sample = m.pi(flat, noise=noise)
        q = m.q_value(flat, sample.action, pick, reduce="avg", params=m.q.detached_params()).view(steps, b)
        new_scale = torch.lerp(scale, percentile_range(q[0]).clamp(min=1.0), c.scale_tau)
        objective = c.entropy_coef * sample.scaled_entropy.view(steps, b) + q / new_scale
        loss = (-objective.mean(1) * rho).mean()
        return loss, new_scale, sample.scaled_entropy.detach().mean()

    def _update_pi(self, z_all: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        c = self.config
        steps, b = z_all.shape[:2]
        noise = torch.randn((steps * b, self.action_dim), generator=self.update_gen, device=self.device)
        loss, new_scale, entropy = self._pi_loss_fn(z_all, rho, noise, self.model.draw_pick(self.update_gen),
                                                    self.scale)
        self.scale = new_scale.detach()
        self.pi_optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.policy.parameters(), c.grad_clip_norm)
        self.pi_optim.step()
        return loss.detach(), entropy

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scale = state["scale"].to(self.device)


__all__ = ["MODEL_SIZES", "TDMPC2Agent", "TDMPC2Config", "episode_length_of",
           "heuristic_discount", "percentile_range"]
