"""TD-MPC (Hansen, Wang, Su, ICML 2022, arXiv 2203.04955).

Read top to bottom, as the paper's Algorithm 1:
1. seed steps: uniform random actions fill the buffer (``explore_steps``; the run loop takes them);
   at their end, as many TOLD updates as there were seed steps (official ``train.py``);
2. act: plan in latent space with MPPI guided by the policy (``plan``): N Gaussian action sequences
   and N_pi policy rollouts through d, scored by sum_t gamma^t R(z_t, a_t) + gamma^H Q(z_H, pi(z_H)),
   top-k elites weighted by exp(G / lambda) refit mu and sigma (sigma >= a scheduled floor), J
   iterations; the executed action is an elite's first action (drawn by weight) + sigma noise;
3. learn: after every env step one TOLD update on a batch of H-step sub-trajectories (``_update_once``):
     L = sum_t rho^t [ c1 ||R(z_t,a_t) - r_t||^2
                     + c2 sum_k ||Q_k(z_t,a_t) - (r_t + gamma min Q_target(z'_t, pi(z'_t)))||^2
                     + c3 ||d(z_t,a_t) - h_target(s_{t+1})||^2 ],   z_0 = h(s_0), z_{t+1} = d(z_t, a_t)
   then the policy: J_pi = -sum_t rho^t min Q(sg(z_t), pi(sg(z_t))); every ``update_freq`` updates
   the target moves, theta- <- (1 - tau) theta- + tau theta.

Defaults are the official configuration (github.com/nicklashansen/tdmpc, ``cfgs/default.yaml``,
cited as "official"), with behaviour taken from its ``src/algorithm/tdmpc.py``.

The planner is a setting of the sampling core every planner shares (``modelrl.planners.sampling``):
softmax-weighted top-k elites, momentum on the mean, std refitted and clamped to [scheduled floor, 2],
the policy trajectories as extra candidates, noise drawn time-major as the official code draws it.
What stays here is TD-MPC's own: the latent objective with the terminal Q, the zero-filled warm
start, the horizon and floor schedules and the elite-sampled output action. A test replays the
planner as it was written before the core and gets the same actions, draw for draw.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modelrl.agents.base import Agent, AgentConfig, stream_seed
from modelrl.data.subtraj import SubTrajectorySampler
from modelrl.device import compiled, generator_state, load_generator_state
from modelrl.envs.rewards import can_terminate
from modelrl.models.told import TOLD
from modelrl.planners.sampling import SamplingOptimizer, SamplingSettings, warm_start

# Official per-domain action repeat (nicklashansen/tdmpc@f4d85ec cfgs/tasks/<domain>.yaml: cartpole.yaml 8,
# finger.yaml, walker.yaml, humanoid.yaml and dog.yaml 2; domains without a file use tasks/default.yaml: 4).
OFFICIAL_ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2, "humanoid": 2, "dog": 2}
# Official per-domain settings beside the action repeat (cfgs/tasks/humanoid.yaml and dog.yaml).
OFFICIAL_DOMAIN_SETTINGS: dict[str, dict[str, Any]] = {
    "humanoid": {"iterations": 12, "latent_dim": 100},
    "dog": {"iterations": 8, "latent_dim": 100, "batch_size": 2048, "lr": 3e-4},
}


def _dmc_domain(env_id: str | None) -> str | None:
    """"dmc:cartpole-swingup" -> "cartpole" (the official config's domain: the part before the first '-')."""
    if env_id is None or not env_id.startswith("dmc:"):
        return None
    return env_id[len("dmc:"):].split("-", 1)[0]


def default_action_repeat(env_id: str | None) -> int:
    """The official TD-MPC action repeat for a DeepMind Control id ("dmc:cartpole-swingup" -> 8); 1 otherwise."""
    domain = _dmc_domain(env_id)
    return 1 if domain is None else OFFICIAL_ACTION_REPEAT.get(domain, 4)


class flush_denormal:
    """Context: denormal floats flush to zero inside, and not after (the process default).

    Pre-activations far below zero make ELU's exp return denormals, which x86 CPUs handle about
    ten times slower than normal floats; flushing them changes values by less than 1e-38 and
    planning and updates run 15-20% faster (measured here, cpu preset).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        if self.enabled:
            torch.set_flush_denormal(True)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            torch.set_flush_denormal(False)


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps (official ``linear_schedule``)."""
    mix = float(np.clip(step / max(duration, 1), 0.0, 1.0))
    return (1.0 - mix) * start + mix * end


@dataclasses.dataclass
class TDMPCConfig(AgentConfig):
    """TD-MPC; defaults from the official ``cfgs/default.yaml`` (state-based DMC)."""

    explore_steps: int = 5000  # official: seed_steps 5000 (agent steps, i.e. after action repeat)
    # -- planning
    horizon: int = 5  # official: horizon 5 (planning and training)
    iterations: int = 6  # official: iterations 6 (humanoid 12, dog 8: applied per task, ``task_defaults``)
    num_samples: int = 512  # official: num_samples 512
    num_elites: int = 64  # official: num_elites 64
    mixture_coef: float = 0.05  # official: mixture_coef 0.05 -> int(0.05 * 512) = 25 policy trajectories
    min_std: float = 0.05  # official: min_std 0.05 (the sigma floor's final value; also the policy's noise std)
    temperature: float = 2.0
    """lambda in w = exp((G - max G) / lambda); official: temperature 0.5 used as a multiplier, exp(0.5 (G - max)),
    so lambda = 2."""
    momentum: float = 0.1  # official: momentum 0.1 (weight of the previous mean)
    max_std: float = 2.0  # official tdmpc.py: sigma starts at 2 and is clamped to [floor, 2]
    std_init: float = 0.5  # official: std_schedule linear(0.5, min_std, 25000)
    schedule_steps: int = 25_000  # official: std_schedule and horizon_schedule run over 25000 steps
    horizon_init: int = 1  # official: horizon_schedule linear(1, horizon, 25000)
    # -- learning
    batch_size: int = 512  # official: batch_size 512 (dog: 2048, applied per task)
    lr: float = 1e-3  # official: lr 1e-3 (dog: 3e-4, applied per task)
    reward_coef: float = 0.5  # official: reward_coef 0.5 (c1)
    value_coef: float = 0.1  # official: value_coef 0.1 (c2)
    consistency_coef: float = 2.0  # official: consistency_coef 2 (c3)
    rho: float = 0.5  # official: rho 0.5 (temporal weight lambda^t in the mission)
    discount: float = 0.99  # official: discount 0.99
    tau: float = 0.01  # official: tau 0.01 (EMA rate of the target network)
    update_freq: int = 2  # official: update_freq 2 (target EMA every 2 updates)
    grad_clip_norm: float = 10.0  # official: grad_clip_norm 10
    prioritized: bool = True  # official: prioritised replay ("Uses prioritized experience replay by default")
    per_alpha: float = 0.6  # official: per_alpha 0.6
    per_beta: float = 0.4  # official: per_beta 0.4
    updates_per_step: int = 1  # official train.py: episode_length updates per episode = 1 per agent step
    pretrain_updates: int | None = None
    """Updates at the end of the seed steps; None: as many as seed steps (official train.py)."""
    # -- architecture
    latent_dim: int = 50  # official: latent_dim 50 (humanoid, dog: 100, applied per task)
    enc_dim: int = 256  # official: enc_dim 256
    mlp_dim: int = 512  # official: mlp_dim 512
    num_q: int = 2  # TD-MPC: twin Q; TD-MPC2: 5 (targets use the min of 2 drawn at random)
    simnorm: bool = False  # TD-MPC2 option: SimNorm latent (groups of 8)
    layernorm_mish: bool = False  # TD-MPC2 option: LayerNorm + Mish hidden layers
    episodic: bool | None = None
    """Tasks that end by termination: TD targets r + gamma (1 - terminated) Q', a termination head trained on the
    terminated flags, and planning that stops counting reward and value after a predicted termination (TD-MPC2's
    ``episodic``; official TD-MPC has no terminations). None: on where the env can terminate
    (``modelrl.envs.can_terminate``: off for DeepMind Control, Pendulum, HalfCheetah, ...; on for unknown ids)."""
    termination_coef: float = 1.0  # TD-MPC2 config.yaml: termination_coef 1
    flush_denormal: bool = True  # ours: CPU speed (see ``flush_denormal``); no effect on results beyond 1e-38
    compile: bool = False
    """ours: torch.compile the latent rollout that scores the candidates and the update's two losses (the random
    draws stay outside, in the same order). On in the ``cpu`` preset, where it was measured (docs/tdmpc.md,
    "Compiled"); off at the paper's settings until a run there shows the same."""

    @classmethod
    def task_defaults(cls, env_id: str | None) -> dict[str, Any]:
        """The official per-domain settings (humanoid, dog); a preset's own values win over them."""
        return dict(OFFICIAL_DOMAIN_SETTINGS.get(_dmc_domain(env_id) or "", {}))

    @classmethod
    def default_action_repeat(cls, env_id: str | None) -> int:
        return default_action_repeat(env_id)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official settings (the defaults above; humanoid and dog add their own, ``task_defaults``).
        "paper": {},
        # A laptop-CPU TD-MPC: 128-unit networks (a sixteenth of the paper's layer-2 FLOPs), half the
        # samples, elites and batch, 4 iterations, 1000 seed steps (TD-MPC2: max(1000, 5 episodes)),
        # horizon and sigma-floor schedules over 5000 steps. Measured: docs/tdmpc.md.
        # compile: 0.78x of eager per agent step here; 100k cartpole env steps in 10.4 min of CPU with returns
        # 869 / 857 (eager: 12.7 min, 874 / 839); docs/tdmpc.md. Falls back to eager where compilation fails.
        "cpu": {"mlp_dim": 128, "enc_dim": 128, "num_samples": 256, "num_elites": 32, "iterations": 4,
                "batch_size": 256, "explore_steps": 1000, "schedule_steps": 5000, "compile": True},
    }


class TDMPCAgent(Agent):
    """TOLD learned from H-step sub-trajectories, acting by policy-guided latent MPPI."""

    config: TDMPCConfig

    def __init__(self, env: gymnasium.Env, config: TDMPCConfig, seed: int = 0, device: str = "auto") -> None:
        super().__init__(env, config, seed, device)
        c = config
        if not (np.allclose(self.action_space.low, -1) and np.allclose(self.action_space.high, 1)):
            raise ValueError("TD-MPC acts in [-1, 1]; build the env with modelrl.make_env")
        if not 1 <= c.num_elites <= c.num_samples + int(c.mixture_coef * c.num_samples):
            raise ValueError(f"need 1 <= num_elites <= num_samples (+ policy trajectories), got {c.num_elites}")
        for name in ("horizon", "iterations", "num_samples", "batch_size", "update_freq", "schedule_steps"):
            if getattr(c, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
        if c.temperature <= 0 or not 0 < c.min_std <= c.max_std:
            raise ValueError("need temperature > 0 and 0 < min_std <= max_std")
        if c.episodic is None:  # resolved here, so config.yaml records what ran
            c = self.config = dataclasses.replace(c, episodic=can_terminate(self.env_id) is not False)
        assert c.episodic is not None  # resolved just above
        self.model = TOLD(self.obs_dim, self.action_dim, latent_dim=c.latent_dim, enc_dim=c.enc_dim,
                          mlp_dim=c.mlp_dim, num_q=c.num_q, simnorm_latent=c.simnorm,
                          layernorm_mish=c.layernorm_mish, termination=c.episodic, seed=seed).to(self.device)
        self.target = copy.deepcopy(self.model).requires_grad_(False)
        pi_params = set(self.model.policy.parameters())
        fused = self.device.type in ("cpu", "cuda")  # one kernel for all parameters (measured: 2 ms of an update here)
        self.optim = torch.optim.Adam([p for p in self.model.parameters() if p not in pi_params], lr=c.lr, fused=fused)
        self.pi_optim = torch.optim.Adam(self.model.policy.parameters(), lr=c.lr, fused=fused)
        self.plan_gen = torch.Generator(self.device).manual_seed(stream_seed(seed, "tdmpc.planning"))
        self.update_gen = torch.Generator(self.device).manual_seed(stream_seed(seed, "tdmpc.updates"))
        self._low = torch.full((self.action_dim,), -1.0, device=self.device)
        self._high = torch.full((self.action_dim,), 1.0, device=self.device)
        self.sampler: SubTrajectorySampler | None = None  # built at the first update, sized like the buffer
        self._sampler_state: dict | None = None
        self.step = 0  # latest env (agent) step seen by ``update``
        self._checked = 0  # buffer.total up to which transitions were checked for terminations
        self.num_updates = 0
        self.std_floor = c.std_init  # sigma floor epsilon, scheduled
        self._prev_mean: Tensor | None = None
        self._t0 = True
        # compile: shapes that change (horizon schedule, evaluation batches) turn dynamic after one recompile
        self._value_fn = compiled(self._latent_value, c.compile)
        self._model_loss_fn = compiled(self._model_loss, c.compile)
        self._pi_loss_fn = compiled(self._pi_loss, c.compile)

    # -- planning (Sec. 3.2) -----------------------------------------------------------------------
    def planning_horizon(self) -> int:
        """H at the current step: official horizon_schedule linear(1, horizon, 25000), rounded down."""
        c = self.config
        return int(min(c.horizon, linear_schedule(c.horizon_init, c.horizon, c.schedule_steps, self.step)))

    @torch.no_grad()
    def estimate_value(self, z: Tensor, actions: Tensor) -> Tensor:
        """G = sum_t gamma^t R(z_t, a_t) + gamma^H min Q(z_H, pi(z_H)) for ``actions[H, N, A]`` from ``z[N, L]``."""
        noise = torch.randn((z.shape[0], self.action_dim), generator=self.plan_gen, device=self.device)  # pi's
        return self._value_fn(z, actions, noise, self.model.draw_pick(self.plan_gen))

    def _latent_value(self, z: Tensor, actions: Tensor, noise: Tensor, pick: Tensor | None) -> Tensor:
        """``estimate_value`` with its random draws given: a pure tensor function (what ``compile`` compiles)."""
        c = self.config
        g, discount = z.new_zeros(z.shape[0]), 1.0
        alive = None  # episodic: 0 once a termination is predicted (TD-MPC2: termination probability > 0.5)
        for a in actions:
            z, r = self.model.next(z, a)
            g = g + discount * (r if alive is None else alive * r)
            discount *= c.discount
            if c.episodic:
                goes_on = (self.model.termination_logit(z) <= 0).to(z.dtype)
                alive = goes_on if alive is None else alive * goes_on
        pi = self.model.pi(z, c.min_std, noise=noise)
        value = self.model.q_min(z, pi, pick=pick)
        return g + discount * (value if alive is None else alive * value)

    def planner_settings(self) -> SamplingSettings:
        """TD-MPC's planner as a setting of the sampling core: softmax-weighted top-k elites, momentum on
        the mean, the std refitted and clamped to [scheduled floor, max_std]."""
        c = self.config
        return SamplingSettings(num_samples=c.num_samples, iterations=c.iterations, num_elites=c.num_elites,
                                weighting="softmax", temperature=c.temperature, momentum=c.momentum,
                                min_std=self.std_floor, max_std=c.max_std, noise_order="time")

    def _policy_actions(self, z0: Tensor, h: int) -> Tensor | None:
        """The policy's extra candidates ``[H, B, N_pi, A]`` from ``z0[B, L]`` (None when N_pi = 0): N_pi
        trajectories of the noisy policy through the latent model (official ``plan``)."""
        c, b, dim = self.config, z0.shape[0], self.action_dim
        num_pi = int(c.mixture_coef * c.num_samples)
        if num_pi <= 0:
            return None
        pi_actions = z0.new_empty(h, b, num_pi, dim)
        z = z0.unsqueeze(1).expand(b, num_pi, -1).reshape(b * num_pi, -1)
        for t in range(h):
            a = self.model.pi(z, c.min_std, self.plan_gen)
            pi_actions[t] = a.view(b, num_pi, dim)
            z, _ = self.model.next(z, a)
        return pi_actions

    @torch.no_grad()
    def plan(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One action by policy-guided latent MPPI (official ``TDMPC.plan``): ``obs[S]`` -> ``[A]``, or a
        batch ``obs[B, S]`` -> ``[B, A]`` (B problems in lockstep, each with its own warm start)."""
        c, gen, dim = self.config, self.plan_gen, self.action_dim
        h = self.planning_horizon()
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = o.ndim == 1
        z0 = self.model.h(o.reshape(-1, self.obs_dim))  # [B, L]
        b = z0.shape[0]
        if self._prev_mean is not None and self._prev_mean.shape[1] != b:
            raise ValueError(f"the planner holds warm starts for {self._prev_mean.shape[1]} problems, got a batch "
                             f"of {b}; call reset() when the batch changes")
        pi_actions = self._policy_actions(z0, h)

        def objective(candidates: Tensor, mean: Tensor) -> Tensor:  # [H, B, N, A] -> G [B, N]
            n = candidates.shape[2]
            z = z0.unsqueeze(1).expand(b, n, -1).reshape(b * n, -1)
            return self.estimate_value(z, candidates.reshape(h, b * n, dim)).nan_to_num_(0.0).view(b, n)

        mean = z0.new_zeros(h, b, dim)
        if not self._t0 and self._prev_mean is not None:  # warm start: previous mean shifted by one step
            mean = warm_start(self._prev_mean, h, mean[0])
        std = torch.full_like(mean, c.max_std)
        core = SamplingOptimizer(self.planner_settings(), self._low, self._high)
        out = core.optimize(objective, mean, std, gen, extra=pi_actions)
        choice = torch.multinomial(out.weights, 1, generator=gen)  # an elite drawn by its weight, [B, 1]
        action = out.elites[0].gather(1, choice.unsqueeze(-1).expand(b, 1, dim))[:, 0]  # [B, A]
        self._prev_mean, self._t0 = out.mean, False
        if not deterministic:
            action = action + out.std[0] * torch.randn(b, dim, generator=gen, device=self.device)
        actions = action.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
        return actions[0] if single else actions

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        with flush_denormal(self.config.flush_denormal):
            return self.plan(obs, deterministic=deterministic)

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.act(np.asarray(obs).reshape(-1, self.obs_dim), deterministic=deterministic)

    def reset(self) -> None:
        self._t0 = True
        self._prev_mean = None

    def keep_rows(self, rows: np.ndarray) -> None:
        """Finished episodes leave the lockstep batch: keep the warm starts of ``rows``."""
        if self._prev_mean is not None:
            idx = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=self.device)
            self._prev_mean = self._prev_mean.index_select(1, idx)

    # -- learning (Sec. 3.1) -----------------------------------------------------------------------
    def update(self, buffer, step: int) -> dict[str, float]:
        """At the end of the seed steps ``pretrain_updates`` TOLD updates, after that ``updates_per_step``."""
        c = self.config
        self.step = step
        self._check_terminations(buffer)
        self.std_floor = self.scheduled_std_floor(step)
        if step < c.explore_steps:
            return {}
        sampler = self.sampler if self.sampler is not None else self._make_sampler(buffer)
        sampler.sync(buffer)
        if sampler.num_valid == 0:
            return {}
        n = c.updates_per_step
        if self.num_updates == 0:
            n = max(n, c.explore_steps if c.pretrain_updates is None else c.pretrain_updates)
        out: dict[str, float] = {}
        with flush_denormal(self.config.flush_denormal):
            for _ in range(n):
                out = self._update_once(buffer)
        return out

    def scheduled_std_floor(self, step: int) -> float:
        """The planner's sigma floor at ``step``: official std_schedule linear(std_init, min_std, schedule_steps)."""
        c = self.config
        return linear_schedule(c.std_init, c.min_std, c.schedule_steps, step)

    def _check_terminations(self, buffer) -> None:
        """Without ``episodic`` a terminated transition would be learned as if the episode went on: refuse it."""
        new = buffer.total - self._checked
        if self.config.episodic or new <= 0:
            self._checked = buffer.total
            return
        slots = (buffer.pos - min(new, buffer.size) + np.arange(min(new, buffer.size))) % buffer.capacity
        self._checked = buffer.total
        if buffer.terminated[slots].any():
            raise ValueError(f"{self.env_id or 'this env'} ended an episode by termination, and this TD-MPC was built "
                             "with episodic=False, which treats every episode as running to its time limit; "
                             "set episodic=True (`--episodic True` on the command line) for tasks that terminate")

    def _make_sampler(self, buffer) -> SubTrajectorySampler:
        c = self.config
        self.sampler = sampler = SubTrajectorySampler(buffer.capacity, c.horizon, prioritized=c.prioritized,
                                                      alpha=c.per_alpha, beta=c.per_beta,
                                                      seed=stream_seed(self.seed, "tdmpc.sampler"))
        if self._sampler_state is not None:
            sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        return sampler

    def _sample_batch(self, buffer) -> tuple[dict, dict[str, Tensor]]:
        """A batch of sub-trajectories from the sampler, as it returned it and as tensors on the device: obs (s_0,
        [B, S]), action [H, B, A], reward [H, B], next_obs (s_1..s_H, [H, B, S]), weight (importance, [B]),
        terminated (float, [H, B])."""
        assert self.sampler is not None, "update() makes it before the first update"
        batch = self.sampler.sample(buffer, self.config.batch_size)
        out = {k: torch.from_numpy(batch[k]).to(self.device, non_blocking=True)
               for k in ("obs", "action", "reward", "next_obs", "weight")}
        out["terminated"] = torch.from_numpy(batch["terminated"]).to(self.device, torch.float32, non_blocking=True)
        return batch, out

    def _update_once(self, buffer) -> dict[str, float]:
        c, model, gen, sampler = self.config, self.model, self.update_gen, self.sampler
        assert sampler is not None, "update() makes it before the first update"
        batch, t = self._sample_batch(buffer)
        dev = self.device
        obs, action, reward, next_obs, weight, terminated = (
            t[k] for k in ("obs", "action", "reward", "next_obs", "weight", "terminated"))
        horizon, b = action.shape[:2]
        rho = c.rho ** torch.arange(horizon, dtype=torch.float32, device=dev).unsqueeze(1)  # [H, 1]

        rows = horizon * b
        noise = torch.randn((rows, self.action_dim), generator=gen, device=dev)  # the TD target's policy noise
        losses = self._model_loss_fn(obs, action, reward, next_obs, terminated, weight, rho, noise,
                                     self.target.draw_pick(gen))
        consistency, reward_loss, value_loss, termination_loss, priority, total, weighted, z_all = losses
        self.optim.zero_grad(set_to_none=True)
        (weighted / horizon).backward()  # official: gradient scaled by 1/H
        grad_norm = torch.nn.utils.clip_grad_norm_(self.optim.param_groups[0]["params"], c.grad_clip_norm)
        self.optim.step()
        # the sum tree lives on the host: the one device-to-host copy of an update
        sampler.update_priorities(batch["idx"], priority.clamp(max=1e4).cpu().numpy())

        pi_loss = self._update_pi(z_all.detach(), rho)
        self.num_updates += 1
        if self.num_updates % c.update_freq == 0:
            with torch.no_grad():
                for p, p_t in zip(model.parameters(), self.target.parameters()):
                    p_t.lerp_(p, c.tau)
        # tensors: the runner averages them over the updates of a logged row and reads them once
        return {"consistency_loss": consistency.detach().mean(), "reward_loss": reward_loss.detach().mean(),
                "value_loss": value_loss.detach().mean(), "pi_loss": pi_loss,
                **({"termination_loss": termination_loss.detach().mean()} if c.episodic else {}),
                "total_loss": total.detach().mean(), "weighted_loss": weighted.detach(),
                "grad_norm": grad_norm.detach(), "std_floor": self.std_floor,
                "horizon": float(self.planning_horizon()), "updates": float(self.num_updates)}

    def _model_loss(self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor,
                    weight: Tensor, rho: Tensor, noise: Tensor, pick: Tensor | None) -> tuple[Tensor, ...]:
        """TOLD's loss on a batch of sub-trajectories, its random draws given (what ``compile`` compiles):
        (consistency, reward, value, termination losses [B], priorities [B], total [B], weighted mean, z_0..z_H).
        ``terminated[H, B]`` (1 where the step ended its episode) cuts the TD target's bootstrap."""
        c, model = self.config, self.model
        horizon, b = action.shape[:2]
        with torch.no_grad():  # targets: TD (online encoder and policy, target Q) and latent consistency
            flat_next = next_obs.reshape(horizon * b, -1)
            next_z = model.h(flat_next)
            next_q = self.target.q_min(next_z, model.pi(next_z, c.min_std, noise=noise), pick=pick).view(horizon, b)
            td_target = reward + c.discount * (1.0 - terminated) * next_q
            z_target = self.target.h(flat_next).view(horizon, b, -1)

        z = model.h(obs)
        zs, rewards = [z], []
        for t in range(horizon):  # latent rollout z_{t+1} = d(z_t, a_t)
            z, r = model.next(z, action[t])
            zs.append(z)
            rewards.append(r)
        z_all = torch.stack(zs)  # [H + 1, B, L]
        q = model.Q(z_all[:-1].reshape(horizon * b, -1), action.reshape(horizon * b, -1)).view(-1, horizon, b)
        consistency = (rho * ((z_all[1:] - z_target) ** 2).mean(-1)).sum(0)  # [B]
        reward_loss = (rho * (torch.stack(rewards) - reward) ** 2).sum(0)
        value_loss = (rho * ((q - td_target) ** 2).sum(0)).sum(0)
        priority = (rho * (q - td_target).abs().sum(0)).sum(0).detach()
        total = (c.consistency_coef * consistency.clamp(max=1e4) + c.reward_coef * reward_loss.clamp(max=1e4)
                 + c.value_coef * value_loss.clamp(max=1e4))
        if c.episodic:  # TD-MPC2: binary cross-entropy of the head on z_1..z_H, mean over the steps (no rho)
            logits = model.termination_logit(z_all[1:].reshape(horizon * b, -1)).view(horizon, b)
            termination = F.binary_cross_entropy_with_logits(logits, terminated, reduction="none").mean(0)
            total = total + c.termination_coef * termination
        else:
            termination = torch.zeros_like(total)
        weighted = (total * weight).mean()
        return consistency, reward_loss, value_loss, termination, priority, total, weighted, z_all

    def _pi_loss(self, z: Tensor, rho: Tensor, noise: Tensor, pick: Tensor | None) -> Tensor:
        """J_pi on ``z[(H + 1) * B, L]`` with the policy noise given (what ``compile`` compiles)."""
        c = self.config
        q = self.model.q_min(z, self.model.pi(z, c.min_std, noise=noise), pick=pick).view(rho.shape[0], -1)
        return -(rho * q).mean(1).sum()

    def _update_pi(self, z_all: Tensor, rho: Tensor) -> Tensor:
        """J_pi = -sum_t rho^t min Q(z_t, pi(z_t)) over z_0..z_H, Q frozen (official ``update_pi``)."""
        c = self.config
        steps, b = z_all.shape[:2]
        rho = torch.cat([rho, rho[-1:] * c.rho])  # H + 1 weights
        q_params = self.model.q_parameters()
        for p in q_params:
            p.requires_grad_(False)
        z = z_all.reshape(steps * b, -1)
        noise = torch.randn((steps * b, self.action_dim), generator=self.update_gen, device=self.device)
        loss = self._pi_loss_fn(z, rho, noise, self.model.draw_pick(self.update_gen))
        self.pi_optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.policy.parameters(), c.grad_clip_norm)
        self.pi_optim.step()
        for p in q_params:
            p.requires_grad_(True)
        return loss.detach()

    # -- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler.state_dict() if self.sampler is not None else self._sampler_state
        return {"model": self.model.state_dict(), "target": self.target.state_dict(), "optim": self.optim.state_dict(),
                "pi_optim": self.pi_optim.state_dict(), "sampler": sampler, "plan_gen": generator_state(self.plan_gen),
                "update_gen": generator_state(self.update_gen), "step": self.step, "num_updates": self.num_updates,
                "std_floor": self.std_floor, "prev_mean": self._prev_mean, "t0": self._t0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.target.load_state_dict(state["target"])
        self.optim.load_state_dict(state["optim"])
        self.pi_optim.load_state_dict(state["pi_optim"])
        load_generator_state(self.plan_gen, state["plan_gen"])
        load_generator_state(self.update_gen, state["update_gen"])
        self.step, self.num_updates, self.std_floor = state["step"], state["num_updates"], state["std_floor"]
        prev = state["prev_mean"]
        if prev is not None:
            prev = (prev.unsqueeze(1) if prev.ndim == 2 else prev).to(self.device)  # older checkpoints: [H, A]
        self._prev_mean, self._t0 = prev, state["t0"]
        self.sampler, self._sampler_state = None, state["sampler"]
