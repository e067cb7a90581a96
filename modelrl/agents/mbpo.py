"""MBPO, model-based policy optimisation (Janner, Fu, Zhang, Levine, NeurIPS 2019, arXiv 1906.08253).

Algorithm 2 of the paper, as the loop here runs it (``update`` is called after every env step):
1. every ``model_train_freq`` env steps: train the probabilistic ensemble p_theta(s', r | s, a)
   by maximum likelihood on D_env (hold-out early stopping, elites);
   then set the rollout length k from the epoch (linear schedule between two epochs) and run
   M * model_train_freq branched rollouts of length k: start states sampled uniformly from
   D_env, actions from pi_phi, each step through a random elite (TS1), all rollouts stepping
   together through the ensemble; add the transitions to D_model, which keeps
   ``model_retain_epochs`` epochs' worth of them;
2. each env step: G = ``utd`` SAC updates on batches of which a fraction ``real_ratio`` comes
   from D_env and the rest from D_model.
Rollouts and model training happen in the blocks of ``model_train_freq`` steps, as in the
official code (it rolls out ``rollout_batch_size`` = 100,000 = 400 * 250 states at each model fit).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from torch import Tensor

from modelrl.agents.base import Agent, charge, clocks, new_timing, stream_seed, timing_columns
from modelrl.agents.sac import SAC, SACConfig, batch_to_tensors, validate_sac_config
from modelrl.device import generator_state, load_generator_state
from modelrl.envs.rewards import task_functions
from modelrl.models.ensemble import make_model
from modelrl.models.learned import LearnedDynamics
from modelrl.models.trainer import ModelTrainer

# Per-task settings of the official code, mbpo/examples/config/<task>/0.py (jannerm/mbpo), keyed by
# the Gymnasium id without its version. They fill the MBPOConfig fields left at None.
# rollout schedule [epoch_start, epoch_end, k_start, k_end]; G = n_train_repeat.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # inverted_pendulum/0.py: epoch_length 250, n_train_repeat 10, rollout_schedule [1, 15, 1, 1],
    # target_entropy -0.05, n_initial_exploration_steps 500. examples/development/base.py sets 5000 for MBPO
    # (ALGORITHM_PARAMS_ADDITIONAL), but get_variant_spec_base deep-updates the task file's kwargs last
    # (lines 130-137 at ac694ff), so the file's 500 is what runs.
    "InvertedPendulum": {"utd": 10, "epoch_length": 250, "rollout_length": 1, "rollout_length_max": 1,
                         "rollout_epochs": (1, 15), "target_entropy": -0.05, "explore_steps": 500},
    # inverted_double_pendulum/0.py: epoch_length 250, n_train_repeat 20, rollout_schedule [1, 15, 1, 1],
    # target_entropy -0.5, n_initial_exploration_steps 500 (n_epochs 80: 20k steps).
    "InvertedDoublePendulum": {"utd": 20, "epoch_length": 250, "rollout_length": 1, "rollout_length_max": 1,
                               "rollout_epochs": (1, 15), "target_entropy": -0.5, "explore_steps": 500},
    # hopper/0.py: n_train_repeat 20, rollout_schedule [20, 150, 1, 15], target_entropy -1.
    "Hopper": {"utd": 20, "rollout_length": 1, "rollout_length_max": 15, "rollout_epochs": (20, 150),
               "target_entropy": -1.0},
    # halfcheetah/0.py: n_train_repeat 40, rollout_schedule [20, 150, 1, 1], target_entropy -3.
    "HalfCheetah": {"utd": 40, "rollout_length": 1, "rollout_length_max": 1, "rollout_epochs": (20, 150),
                    "target_entropy": -3.0},
    # walker2d/0.py: n_train_repeat 20, rollout_schedule [20, 150, 1, 1], target_entropy -3.
    "Walker2d": {"utd": 20, "rollout_length": 1, "rollout_length_max": 1, "rollout_epochs": (20, 150),
                 "target_entropy": -3.0},
    # ant/0.py: n_train_repeat 20, rollout_schedule [20, 100, 1, 25], target_entropy -4.
    "Ant": {"utd": 20, "rollout_length": 1, "rollout_length_max": 25, "rollout_epochs": (20, 100),
            "target_entropy": -4.0},
    # humanoid/0.py: n_train_repeat 20, rollout_schedule [20, 300, 1, 25], target_entropy -2,
    # model_train_freq 1000, model_retain_epochs 5, hidden_dim 400; rollout_batch_size 100e3 per model fit,
    # as every task, which at one fit per 1000 steps is M = 100 rollouts per env step.
    "Humanoid": {"utd": 20, "rollout_length": 1, "rollout_length_max": 25, "rollout_epochs": (20, 300),
                 "target_entropy": -2.0, "model_train_freq": 1000, "model_retain_epochs": 5,
                 "model_hidden_size": 400, "rollouts_per_step": 100},
    # Pendulum-v1 is not in the MBPO paper. Ours: the InvertedPendulum pattern (k = 1 throughout,
    # a short epoch), G = 20 (the paper's value for most tasks), five random episodes of seed data
    # (with two, seed 2 of three settled into spinning the pendulum; docs/mbpo.md), H_target = -dim(A)
    # (SAC's rule).
    # min_pool_size 200: examples/development/base.py MAX_PATH_LENGTH_PER_DOMAIN["Pendulum"].
    "Pendulum": {"utd": 20, "epoch_length": 200, "rollout_length": 1, "rollout_length_max": 1,
                 "rollout_epochs": (1, 15), "explore_steps": 1000, "min_pool_size": 200},
}
# What a field left at None becomes when the task is not in the table: the Hopper file's values
# and examples/development/base.py (n_initial_exploration_steps 5000).
FALLBACK: dict[str, Any] = {"utd": 20, "epoch_length": 1000, "rollout_length": 1, "rollout_length_max": 1,
                            "rollout_epochs": (20, 150), "explore_steps": 5000, "model_train_freq": 250,
                            "model_retain_epochs": 1, "model_hidden_size": 200, "rollouts_per_step": 400,
                            "min_pool_size": 1000}


def task_key(env_id: str | None) -> str | None:
    """``"Hopper-v5"`` -> ``"Hopper"``; None where the id is not in ``TASK_DEFAULTS``."""
    if env_id is None:
        return None
    name = re.sub(r"-v\d+$", "", env_id.split(":")[-1])
    return name if name in TASK_DEFAULTS else None


@dataclasses.dataclass
class MBPOConfig(SACConfig):
    """MBPO's settings (the SAC fields above configure its policy optimiser). Fields left at None
    take the official per-task value (``TASK_DEFAULTS``); the rest are common to all its tasks
    (the paper's Table 3 / the config files, which agree)."""

    explore_steps: int | None = None  # type: ignore[assignment]
    """Random steps before the first model fit (None: per task; official base.py: 5000)."""
    utd: int | None = None  # type: ignore[assignment]
    """G, SAC updates per env step (None: per task, paper Table 3: 20, HalfCheetah 40; code: InvertedPendulum 10)."""
    real_ratio: float = 0.05  # all config files: real_ratio 0.05 (fraction of each batch from D_env)
    rollouts_per_step: int | None = None
    """M, model rollouts per env step (None: per task; paper Table 3: 400; the config files roll out
    rollout_batch_size 1e5 states per model fit, 400 x 250, so Humanoid's fit every 1000 steps is M = 100)."""
    min_pool_size: int | None = None
    """SAC updates start once D_env holds this many transitions of completed episodes (None: per task; official
    SimpleSampler adds a path to the pool at its end and ``ready_to_train`` waits for min_pool_size = the task's
    max path length, 1000; Pendulum 200)."""
    rollout_length: int | None = None
    """k at the start of the schedule (None: per task; all files: 1)."""
    rollout_length_max: int | None = None
    """k at the end of the schedule (None: per task, e.g. Hopper 15)."""
    rollout_epochs: tuple[int, int] | None = None
    """Epochs (a, b) over which k grows linearly from rollout_length to rollout_length_max (None: per task)."""
    epoch_length: int | None = None
    """Env steps per epoch (None: per task; 1000, InvertedPendulum 250)."""
    model_train_freq: int | None = None  # config files: model_train_freq 250 (Humanoid 1000)
    model_retain_epochs: int | None = None  # config files: 1 (Humanoid 5); D_model keeps this many epochs
    # -- the model (mbpo/models/constructor.py construct_model, as we recall it: BNN, swish)
    ensemble_size: int = 7  # config files: num_networks 7
    num_elites: int = 5  # config files: num_elites 5
    model_hidden_size: int | None = None  # config: hidden_dim 200 (Humanoid 400)
    model_num_layers: int = 4  # construct_model: 4 hidden FC layers
    model_lr: float = 1e-3  # construct_model: Adam learning_rate 0.001
    model_weight_decay: float | tuple[float, ...] | None = None
    """L2 decay per layer (the hidden layers, then the output) or one value. None: constructor.py construct_model's
    2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4 for its four hidden layers; 5e-5 for every layer of another depth."""
    model_batch_size: int = 256  # mbpo.py _train_model: batch_size 256
    holdout_ratio: float = 0.2  # mbpo.py _train_model: holdout_ratio 0.2
    model_patience: int = 6  # bnn.py _save_best: stop when more than 5 epochs passed without an improvement
    model_max_holdout: int = 5000  # bnn.py train: num_holdout = min(holdout_ratio N, max_logging 5000)
    model_max_epochs: int | None = None
    """Cap on epochs per model fit (None: none, as MBPO's max_epochs=None; early stopping ends it)."""
    learn_reward: bool | None = None
    """None: the task's known reward where ``modelrl.envs.rewards`` has one, else learned (MBPO learns it always)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official per-task settings (the defaults).
        "mbpo": {},
        # SAC inside the same loop: no model, every batch real (real_ratio = 1); with --utd G, SAC at UTD G.
        "sac": {"real_ratio": 1.0},
    }


_MAX_EPOCHS_UNCAPPED = 10_000  # "no cap": early stopping (patience) ends every fit long before this


def resolve_config(c: MBPOConfig, env_id: str | None) -> MBPOConfig:
    """Fill the fields left at None from the task's official settings; validate the result."""
    table = {**FALLBACK, **TASK_DEFAULTS.get(task_key(env_id) or "", {})}
    filled = {k: v for k, v in table.items() if getattr(c, k) is None}
    c = dataclasses.replace(c, **filled)
    if c.model_weight_decay is None:
        official = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # construct_model, four hidden layers and the output
        c = dataclasses.replace(c, model_weight_decay=official if c.model_num_layers == 4 else 5e-5)
    elif not isinstance(c.model_weight_decay, (int, float)):
        c = dataclasses.replace(c, model_weight_decay=tuple(float(d) for d in c.model_weight_decay))
    if c.rollout_epochs is not None:
        a, b = c.rollout_epochs
        c = dataclasses.replace(c, rollout_epochs=(int(a), int(b)))
    validate_mbpo_config(c)
    return c


def validate_mbpo_config(c: MBPOConfig) -> None:
    """Clear errors for settings that cannot work (in a config ``resolve_config`` has filled)."""
    validate_sac_config(c)
    assert c.rollout_length is not None and c.rollout_length_max is not None and c.rollout_epochs is not None
    assert c.model_weight_decay is not None and c.min_pool_size is not None and c.explore_steps is not None
    if not 0.0 <= c.real_ratio <= 1.0:
        raise ValueError(f"real_ratio (fraction of each batch from D_env) must be in [0, 1], got {c.real_ratio}")
    if c.rollout_length < 1 or c.rollout_length_max < 1:
        raise ValueError(f"rollout length k must be >= 1, got rollout_length={c.rollout_length}, "
                         f"rollout_length_max={c.rollout_length_max}")
    a, b = c.rollout_epochs
    if not 0 <= a < b:
        raise ValueError(f"rollout_epochs (a, b) needs 0 <= a < b, got {c.rollout_epochs}")
    if not isinstance(c.model_weight_decay, (int, float)) and len(c.model_weight_decay) != c.model_num_layers + 1:
        raise ValueError(f"model_weight_decay: one value, or one per layer ({c.model_num_layers} hidden + the output = "
                         f"{c.model_num_layers + 1}), got {len(c.model_weight_decay)}")
    if c.min_pool_size < 0:
        raise ValueError(f"min_pool_size must be >= 0, got {c.min_pool_size}")
    for name in ("rollouts_per_step", "epoch_length", "model_train_freq", "model_retain_epochs", "ensemble_size",
                 "model_hidden_size", "model_num_layers", "model_batch_size", "model_patience"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if not 1 <= c.num_elites <= c.ensemble_size:
        raise ValueError(f"need 1 <= num_elites <= ensemble_size, got {c.num_elites} of {c.ensemble_size}")
    if c.model_max_epochs is not None and c.model_max_epochs < 1:
        raise ValueError(f"model_max_epochs must be >= 1 or None, got {c.model_max_epochs}")
    if c.explore_steps < 1 and c.real_ratio < 1.0:
        raise ValueError("MBPO needs explore_steps >= 1: the first model fit needs data")


def rollout_length(c: MBPOConfig, epoch: int) -> int:
    """k at ``epoch``: rollout_length until epoch a, then linear to rollout_length_max at epoch b
    (mbpo.py ``_set_rollout_length``, truncated to an integer as there). ``c`` as ``resolve_config`` fills it."""
    assert c.rollout_epochs is not None and c.rollout_length is not None and c.rollout_length_max is not None
    a, b = c.rollout_epochs
    frac = min(max((epoch - a) / (b - a), 0.0), 1.0)
    return int(c.rollout_length + frac * (c.rollout_length_max - c.rollout_length))


class ModelPool:
    """D_model: a FIFO ring of model transitions in torch tensors; resizable, keeping the newest."""

    KEYS = ("obs", "action", "reward", "next_obs", "terminated")

    def __init__(self, obs_dim: int, action_dim: int, device: torch.device) -> None:
        self.dims = {"obs": (obs_dim,), "action": (action_dim,), "reward": (), "next_obs": (obs_dim,), "terminated": ()}
        self.device = device
        self.capacity, self.size, self.pos = 0, 0, 0
        self.data = {k: torch.empty((0, *d), device=device) for k, d in self.dims.items()}

    def __len__(self) -> int:
        return self.size

    def ordered(self) -> dict[str, Tensor]:
        """The stored transitions, oldest first."""
        if self.size < self.capacity:
            return {k: v[: self.size] for k, v in self.data.items()}
        return {k: torch.cat([v[self.pos:], v[: self.pos]]) for k, v in self.data.items()}

    def resize(self, capacity: int) -> None:
        """New capacity, keeping the newest transitions (mbpo.py ``_reallocate_model_pool``)."""
        if capacity == self.capacity:
            return
        old = self.ordered()
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        self.data = {k: torch.empty((self.capacity, *d), device=self.device) for k, d in self.dims.items()}
        self.add(old)

    def add(self, batch: dict[str, Tensor]) -> None:
        n = batch["obs"].shape[0]
        if n > self.capacity:
            batch = {k: v[n - self.capacity:] for k, v in batch.items()}
            n = self.capacity
        first = min(n, self.capacity - self.pos)
        for k, v in batch.items():
            self.data[k][self.pos:self.pos + first] = v[:first]
            self.data[k][: n - first] = v[first:]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(self.size, (n,), generator=gen, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "data": {k: v.cpu().clone() for k, v in self.ordered().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.size, self.pos = 0, 0, 0
        self.resize(int(state["capacity"]))
        self.add({k: v.to(self.device) for k, v in state["data"].items()})


@torch.no_grad()
def branched_rollouts(dynamics: LearnedDynamics, policy, start: Tensor, k: int) -> tuple[dict[str, Tensor], float]:
    """k-step rollouts from every row of ``start[M, S]``, all M stepping together through the model.

    Rows whose transition the task (or the model) calls terminal stop there, as in mbpo.py
    ``_rollout_model``. Returns the transitions, concatenated over steps, and the mean length.
    """
    terminal = getattr(dynamics, "terminal", None)
    out: dict[str, list[Tensor]] = {key: [] for key in ModelPool.KEYS}
    obs, steps = start, 0
    for _ in range(k):
        action = policy(obs)
        next_obs, reward = dynamics.step(obs, action)
        done = terminal(next_obs) if terminal is not None else torch.zeros(obs.shape[0], dtype=torch.bool,
                                                                          device=obs.device)
        for key, v in zip(ModelPool.KEYS, (obs, action, reward, next_obs, done.float())):
            out[key].append(v)
        steps += obs.shape[0]
        keep = ~done
        if not bool(keep.any()):
            break
        obs = next_obs[keep]
    return {key: torch.cat(v) for key, v in out.items()}, steps / max(start.shape[0], 1)


class MBPOAgent(Agent):
    """MBPO: an ensemble model, branched k-step rollouts into D_model, SAC on mixed batches."""

    config: MBPOConfig

    def __init__(self, env: gymnasium.Env, config: MBPOConfig, seed: int = 0, device: str = "auto") -> None:
        c = resolve_config(config, env.spec.id if env.spec is not None else None)
        super().__init__(env, c, seed, device)
        self.sac = SAC(self.obs_dim, self.action_dim, c, seed=seed, device=self.device)
        self.device = self.sac.device
        self.uses_model = c.real_ratio < 1.0
        known = task_functions(self.env_id)
        learn_reward = (known is None) if c.learn_reward is None else c.learn_reward
        if known is None and not learn_reward:
            raise ValueError(f"{self.env_id} has no known reward function; set learn_reward=True")
        self.learn_termination = known is None  # unknown task: learn when episodes end, too
        assert c.model_weight_decay is not None  # resolve_config filled it
        self.model = make_model("ensemble", self.obs_dim, self.action_dim, ensemble_size=c.ensemble_size,
                                num_elites=c.num_elites, hidden_size=c.model_hidden_size,
                                num_layers=c.model_num_layers, learn_reward=learn_reward,
                                learn_termination=self.learn_termination,
                                seed=stream_seed(seed, "mbpo.model")).to(self.device)
        self.trainer = ModelTrainer(self.model, lr=c.model_lr, weight_decay=c.model_weight_decay,
                                    batch_size=c.model_batch_size, holdout_ratio=c.holdout_ratio,
                                    max_epochs=c.model_max_epochs or _MAX_EPOCHS_UNCAPPED,
                                    patience=c.model_patience, max_holdout=c.model_max_holdout,
                                    # bnn.py: first best 1e10
                                    keep_pre_fit=False, seed=stream_seed(seed, "mbpo.trainer"))
        reward_fn = known.reward if known is not None and not learn_reward else None  # known: checked above
        self.dynamics = LearnedDynamics(self.model, reward_fn=reward_fn,
                                        termination_fn=known.terminal if known is not None else None,
                                        mode="ts1", particles=1, seed=stream_seed(seed, "mbpo.propagation"))
        self.pool = ModelPool(self.obs_dim, self.action_dim, self.device)
        self.gen = torch.Generator(device=self.device)  # model-pool sampling
        self.gen.manual_seed(stream_seed(seed, "mbpo.rollouts"))
        self.start_rng = np.random.default_rng(stream_seed(seed, "mbpo.starts"))
        self.n_real = int(c.batch_size * c.real_ratio) if self.uses_model else c.batch_size  # mbpo.py _training_batch
        self.k = c.rollout_length
        self.fits = 0
        self.completed = 0  # transitions of D_env in completed episodes (official: the pool SAC waits on)
        self.timing = new_timing(("model", "rollout", "policy"))
        self._model_info: dict[str, float] = {}

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.sac.act(obs, deterministic=deterministic)

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.sac.act_batch(obs, deterministic=deterministic)

    def epoch(self, step: int) -> int:
        """MBPO's epoch index: epochs count from the end of the random seed steps."""
        c = self.config
        assert c.explore_steps is not None and c.epoch_length is not None  # resolve_config filled them
        return max(step - c.explore_steps, 0) // c.epoch_length

    # -- 1. model: fit on D_env, then branched rollouts into D_model ----------------------------
    def _fit_and_rollout(self, buffer, step: int) -> None:
        c = self.config
        assert c.rollouts_per_step is not None and c.model_train_freq is not None  # resolve_config filled them
        assert c.model_retain_epochs is not None and c.epoch_length is not None
        mark = clocks()
        data = buffer.all()
        out = self.trainer.fit(data["obs"], data["action"], data["next_obs"],
                               reward=data["reward"] if self.model.learn_reward else None,
                               terminated=data["terminated"] if self.learn_termination else None)
        self.fits += 1
        mark = charge(self.timing, "model", mark)
        self.k = rollout_length(c, self.epoch(step))
        m = c.rollouts_per_step * c.model_train_freq  # states rolled out now (official: rollout_batch_size)
        self.pool.resize(c.model_retain_epochs * self.k * c.rollouts_per_step * c.epoch_length)
        idx = self.start_rng.integers(0, len(buffer), size=m)
        start = torch.as_tensor(buffer.obs[idx], device=self.device)
        batch, mean_len = branched_rollouts(self.dynamics, self.sac.policy, start, self.k)
        self.pool.add(batch)
        charge(self.timing, "rollout", mark)
        self._model_info = {"model_holdout_mse": float(out["holdout_mse_real"]), "model_epochs": float(out["epochs"]),
                            "model_train_loss": float(out["train_loss"]), "rollout_length": float(self.k),
                            "rollout_mean_length": float(mean_len), "model_pool": float(len(self.pool))}

    # -- 2. policy: G SAC updates on real + model batches ---------------------------------------
    def _batches(self, buffer, g: int) -> list[Tensor]:
        """G batches at once, each ``[B, ...]`` = n_real rows from D_env then B - n_real from D_model."""
        c = self.config
        parts = []
        if self.n_real > 0:
            real = batch_to_tensors(buffer.sample(g * self.n_real), self.device)
            parts.append([t.reshape(g, self.n_real, *t.shape[1:]) for t in real])
        n_model = c.batch_size - self.n_real
        if n_model > 0:
            fake = self.pool.sample(g * n_model, self.gen)
            parts.append([fake[k].reshape(g, n_model, *fake[k].shape[1:]) for k in ModelPool.KEYS])
        if len(parts) == 1:
            return parts[0]
        return [torch.cat([r, f], dim=1) for r, f in zip(*parts)]

    def update(self, buffer, step: int) -> dict[str, float]:
        c = self.config
        assert c.explore_steps is not None and c.model_train_freq is not None  # resolve_config filled them
        assert c.min_pool_size is not None and c.utd is not None
        last = (buffer.pos - 1) % buffer.capacity
        if buffer.size and (buffer.terminated[last] or buffer.truncated[last]):
            self.completed = step
        if step < c.explore_steps:
            return {}
        if self.uses_model and (step - c.explore_steps) % c.model_train_freq == 0:
            self._fit_and_rollout(buffer, step)
        if self.completed < c.min_pool_size:
            return dict(self._model_info)  # official ready_to_train: not yet
        mark = clocks()
        data = self._batches(buffer, c.utd)
        losses: dict[str, Tensor] = {}
        for g in range(c.utd):
            losses = self.sac.update(*(t[g] for t in data))
        out: dict[str, Any] = dict(losses)  # tensors: the runner averages them per logged row
        charge(self.timing, "policy", mark)
        out.update(self._model_info)
        out.update(timing_columns(self.timing))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sac": self.sac.state_dict(), "model": self.model.state_dict(), "trainer": self.trainer.state_dict(),
                "dynamics_gen": generator_state(self.dynamics.generator), "pool": self.pool.state_dict(),
                "gen": generator_state(self.gen), "start_rng": self.start_rng.bit_generator.state, "k": self.k,
                "fits": self.fits, "completed": self.completed, "timing": dict(self.timing),
                "model_info": dict(self._model_info)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sac.load_state_dict(state["sac"])
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(state["trainer"])
        load_generator_state(self.dynamics.generator, state["dynamics_gen"])
        self.pool.load_state_dict(state["pool"])
        load_generator_state(self.gen, state["gen"])
        self.start_rng.bit_generator.state = state["start_rng"]
        self.k, self.fits = int(state["k"]), int(state["fits"])
        # checkpoints from before min_pool_size: they were already updating SAC
        min_pool_size = self.config.min_pool_size
        assert min_pool_size is not None  # resolve_config filled it
        self.completed = int(state.get("completed", min_pool_size if self.fits else 0))
        self.timing.update(state["timing"])
        self._model_info = dict(state["model_info"])
