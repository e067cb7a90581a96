"""Model-based RL with MPC: v0.5, v1.5 (the versions of Levine's CS 285 lecture "Model-based reinforcement
learning", UC Berkeley; Nagabandi et al. 2018 for v1.5 with a neural model) and PETS (Chua et al. 2018).

The loop, read top to bottom:
1. run a base policy (uniform random actions, ``explore_steps``) to collect D = {(s, a, s')};
2. learn f(s, a) by minimising sum ||f(s, a) - s'||^2 (or the Gaussian likelihood of an
   ensemble), predicting the change s' - s;
3. plan with f: at each step optimise an H-step action sequence through the model, execute the
   first action (receding horizon);
4. v1.5 / PETS: add the new (s, a, s') to D and refit (every episode or every N steps).
The reward used in planning is the task's known function of (s, a, s') where there is one
(``modelrl.envs.rewards``), else a learned reward head.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
import torch

from modelrl.agents.base import Agent, AgentConfig, stream_seed
from modelrl.device import generator_state, load_generator_state
from modelrl.envs.rewards import task_functions
from modelrl.models.ensemble import make_model
from modelrl.models.learned import LearnedDynamics
from modelrl.models.trainer import ModelTrainer
from modelrl.planners import PLANNERS, make_planner


@dataclasses.dataclass
class MPCConfig(AgentConfig):
    """Defaults are PETS (Chua et al. 2018): probabilistic ensemble, TS-inf, CEM."""

    explore_steps: int = 200
    """Uniform random steps before the first fit (PETS: one random trial; 200 = one Pendulum-v1 episode)."""
    # -- model
    # PETS: probabilistic ensemble ("mlp": one deterministic network, v0.5 / v1.5)
    model: Literal["ensemble", "mlp"] = "ensemble"
    ensemble_size: int = 5  # PETS Sec. 4: B = 5
    hidden_size: int = 200  # PETS App. A.1 / mbrl-lib gaussian_mlp_ensemble.yaml: 200 units
    num_layers: int = 4  # mbrl-lib gaussian_mlp_ensemble.yaml: 4 hidden layers
    learn_reward: bool | None = None
    """None: learn the reward only where the task has no known reward function."""
    shaped_reward: bool = True
    """Plan with the task's tie-breaking planning reward where it has one (ours; InvertedPendulum-v5's centring
    term)."""
    propagation: Literal["ts_inf", "ts1", "mean"] = "ts_inf"  # PETS: TS-inf is its main variant (PE-TS)
    particles: int = 20  # PETS Sec. 4.2: P = 20
    # -- model training
    model_lr: float = 7.5e-4  # mbrl-lib pets_cartpole.yaml: model_lr
    model_weight_decay: float = 3e-5  # mbrl-lib pets_cartpole.yaml: model_wd
    model_batch_size: int = 256  # mbrl-lib pets_cartpole.yaml: model_batch_size
    model_epochs: int = 25  # mbrl-lib pets_cartpole.yaml: num_epochs_train_model, per refit
    model_patience: int = 5  # ours: stop a refit after 5 epochs without hold-out improvement
    holdout_ratio: float = 0.2  # mbrl-lib pets configs: validation_ratio
    refit_every: int = 0
    """0: refit at every episode end (PETS, v1.5); N > 0: every N steps; -1: fit once (v0.5)."""
    # -- planner
    planner: Literal["cem", "icem", "mppi", "random_shooting", "ilqr"] = "cem"  # PETS: CEM
    horizon: int = 15  # ours for Pendulum-v1 (the true-model planners use 15); PETS App. A.7 uses 25-30 on its tasks
    num_samples: int = 500  # PETS App. A.7: popsize 500
    plan_elites: int = 50  # CEM only; PETS App. A.7: 50 elites
    iterations: int = 5  # PETS App. A.7: 5 CEM iterations
    temperature: float = 1.0  # MPPI only (lambda)
    truncated: bool = True
    """CEM only: candidates from a normal truncated at +-2 std, its variance shrunk near the action bounds (PETS,
    handful-of-trials dmbrl/misc/optimizers/cem.py lines 74-76; mbrl-lib CEMOptimizer); False: sample a Gaussian and
    clamp it to the bounds (the ``pets-cpu`` preset: measured better on Pendulum, docs/training.md)."""
    compile: bool = False
    """ours: torch.compile the planner's model rollout. Plans in 0.65x (v1.5) and 0.71x (pets-cpu) of the eager time
    on this project's CPU (docs/benchmarks.md, "Device check"); off until a learning run shows the returns unchanged."""

    LIGHT_PRESET: ClassVar[str | None] = "pets-cpu"  # PETS's design at a laptop's cost (docs/training.md)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # PETS with the paper's settings (the defaults above).
        "pets": {},
        # A smaller PETS for a laptop CPU: 0.21 s per action against 7.4 s for the paper's settings
        # (Pendulum-v1, 1 thread, measured here); its returns against the paper's are still to be measured.
        # TS1 rather than TS-inf: with only 5 particles TS-inf reached -217 at 800 steps, TS1 -86 (seed 0,
        # 3 evaluation episodes, same cost; TS-inf with 20 particles and 100 samples: -87).
        # Clamped Gaussian candidates rather than PETS's truncated normal: better on Pendulum with the true and the
        # learned model (benchmarks.cem_sampling; docs/training.md, "Against the official PETS code").
        "pets-cpu": {"particles": 5, "propagation": "ts1", "num_samples": 200, "plan_elites": 20, "iterations": 3,
                     "hidden_size": 128, "num_layers": 3, "truncated": False},
        # Notes' v0.5: random data once, fit a deterministic MLP, plan; never refit.
        "v0.5": {"model": "mlp", "propagation": "mean", "particles": 1, "explore_steps": 1000, "refit_every": -1,
                 "planner": "mppi", "num_samples": 500, "iterations": 1, "temperature": 0.1},
        # Notes' v1.5: deterministic MLP refit on the aggregated data after every episode. Sizes are ours, for a
        # laptop CPU: 128x3 and 300 samples plan in ~20 ms per action against ~200 ms for 200x4 and 500
        # samples (Pendulum-v1, 1 thread); on Pendulum both reached about -85 at 600-800 steps (seed 0).
        "v1.5": {"model": "mlp", "propagation": "mean", "particles": 1, "refit_every": 0, "planner": "mppi",
                 "num_samples": 300, "iterations": 1, "temperature": 0.1, "hidden_size": 128, "num_layers": 3},
    }


class MPCAgent(Agent):
    """MPC through a learned model: fit f on the replay buffer, plan with any planner."""

    config: MPCConfig

    def __init__(self, env: gymnasium.Env, config: MPCConfig, seed: int = 0, device: str = "auto") -> None:
        super().__init__(env, config, seed, device)
        c = config
        if c.planner not in PLANNERS or c.planner == "lqr":
            raise ValueError(f"MPC agent planner must be one of {', '.join(k for k in PLANNERS if k != 'lqr')}, "
                             f"got {c.planner!r}")
        if c.refit_every < -1:
            raise ValueError(f"refit_every must be -1, 0 or positive, got {c.refit_every}")
        if c.planner == "ilqr" and c.model == "ensemble" and c.propagation == "ts_inf":
            raise ValueError("ilqr optimises one trajectory, which TS-inf cannot propagate (it assigns each particle "
                             "a member, in multiples of the ensemble size): use propagation ts1 or mean with ilqr, "
                             "or a sampling planner (cem, icem, mppi) with ts_inf")
        known = task_functions(self.env_id)
        learn_reward = (known is None) if c.learn_reward is None else c.learn_reward
        if known is None and not learn_reward:
            raise ValueError(f"{self.env_id} has no known reward function; set learn_reward=True")
        torch.manual_seed(seed)
        model_kw = dict(hidden_size=c.hidden_size, num_layers=c.num_layers, learn_reward=learn_reward,
                        seed=stream_seed(seed, "mpc.model"))
        if c.model == "ensemble":
            model_kw["ensemble_size"] = c.ensemble_size
        self.model = make_model(c.model, self.obs_dim, self.action_dim, **model_kw).to(self.device)
        self.trainer = ModelTrainer(self.model, lr=c.model_lr, weight_decay=c.model_weight_decay,
                                    batch_size=c.model_batch_size, holdout_ratio=c.holdout_ratio,
                                    max_epochs=c.model_epochs, patience=c.model_patience,
                                    seed=stream_seed(seed, "mpc.trainer"))
        reward_fn = known.for_planning(c.shaped_reward) if known is not None and not learn_reward else None
        self.dynamics = LearnedDynamics(
            self.model, reward_fn=reward_fn,
            termination_fn=known.terminal if known is not None else None,
            mode=c.propagation, particles=c.particles, seed=stream_seed(seed, "mpc.propagation"))
        self.planner = make_planner(c.planner, self.dynamics, env.action_space, seed=stream_seed(seed, "mpc.planner"),
                                    device=self.device,
                                    compile=c.compile, **self._planner_kwargs(c))
        self.fitted = False
        self.refits = 0
        self.rng = np.random.default_rng(stream_seed(seed, "mpc.base_policy"))

    @staticmethod
    def _planner_kwargs(c: MPCConfig) -> dict[str, Any]:
        """The config's planner settings that the chosen planner takes."""
        wanted = {"horizon": c.horizon, "num_samples": c.num_samples, "iterations": c.iterations,
                  "temperature": c.temperature}
        if c.planner in ("cem", "icem"):  # MPPI weights all its samples here
            wanted["num_elites"] = c.plan_elites
        if c.planner == "cem":  # iCEM's colored noise is not truncated
            wanted["truncated"] = c.truncated
        params = inspect.signature(PLANNERS[c.planner]).parameters
        return {k: v for k, v in wanted.items() if k in params}

    def planning_flops(self, config: AgentConfig | None = None) -> float | None:
        """Dense-layer FLOPs of one planned action of a sampling planner (None for ilqr, whose cost is its
        derivatives'): iterations x horizon x (samples x particles) model rows, each
        2 x (in x hidden + (layers - 1) x hidden^2 + hidden x out) with out = the model's outputs (a Gaussian head:
        mean and log-variance of the next state, and of the reward where it is learned); elementwise work is left
        out. PETS at the paper's settings on Pendulum-v1: 183 GFLOP (docs/benchmarks.md, "PETS at the paper's
        settings")."""
        c = config or self.config
        if not isinstance(c, MPCConfig):
            raise TypeError(f"planning_flops of an MPC agent needs an MPCConfig, got a {type(c).__name__}")
        if c.planner == "ilqr":
            return None
        targets = self.model.gauss_dim  # the next state, and the reward where it is learned
        out = 2 * targets if c.model == "ensemble" else targets
        per_row = 2 * ((self.obs_dim + self.action_dim) * c.hidden_size + (c.num_layers - 1) * c.hidden_size ** 2
                       + c.hidden_size * out)
        rows = c.num_samples * (c.particles if c.propagation != "mean" else 1)
        return float(c.iterations * c.horizon * rows * per_row)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        if not self.fitted:  # nothing learned yet: the base policy
            return self.rng.uniform(self.action_space.low, self.action_space.high).astype(np.float32)
        return self.planner.act(obs)

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One plan per row of ``obs[B, S]``, all B in one batched planner call."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, self.obs_dim)
        if not self.fitted:
            shape = (obs.shape[0], self.action_dim)
            return self.rng.uniform(self.action_space.low, self.action_space.high, size=shape).astype(np.float32)
        return self.planner.act(obs)

    def reset(self) -> None:
        self.planner.reset()

    def keep_rows(self, rows: np.ndarray) -> None:
        self.planner.keep_rows(rows)

    def _due(self, buffer, step: int) -> bool:
        c = self.config
        if step < c.explore_steps:
            return False
        if not self.fitted:
            return True
        if c.refit_every == -1:
            return False
        if c.refit_every == 0:
            last = (buffer.pos - 1) % buffer.capacity
            return bool(buffer.terminated[last] or buffer.truncated[last])
        return step % c.refit_every == 0

    def update(self, buffer, step: int) -> dict[str, float]:
        """Refit the model on all of D when due (see ``refit_every``)."""
        if not self._due(buffer, step):
            return {}
        data = buffer.all()
        out = self.trainer.fit(data["obs"], data["action"], data["next_obs"],
                               reward=data["reward"] if self.model.learn_reward else None)
        self.fitted = True
        self.refits += 1
        return {"model_holdout_mse": float(out["holdout_mse_real"]), "model_epochs": float(out["epochs"]),
                "model_train_loss": float(out["train_loss"]), "refits": float(self.refits)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "trainer": self.trainer.state_dict(),
                "planner": self.planner.state_dict(), "dynamics_rng": generator_state(self.dynamics.generator),
                "fitted": self.fitted, "refits": self.refits, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(state["trainer"])
        self.planner.load_state_dict(state["planner"])
        load_generator_state(self.dynamics.generator, state["dynamics_rng"])
        self.fitted, self.refits = state["fitted"], state["refits"]
        self.rng.bit_generator.state = state["rng"]
