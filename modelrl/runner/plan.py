"""Closed-loop MPC on a real environment with its true model: ``modelrl plan PLANNER``."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelrl.agents.base import check_fields
from modelrl.device import resolve_device
from modelrl.envs import make_env, true_dynamics
from modelrl.planners import is_linear, make_planner, planner_key, planner_settings
from modelrl.runner.rundir import (
    MetricsWriter,
    atomic_write_text,
    create_run_dir,
    default_run_dir,
    progress_bar,
    save_config,
)

# Settings per (planner, env) that differ from the planners' own defaults, each measured by
# benchmarks/planners.py (docs/benchmarks.md). Anything given on the command line wins.
PLAN_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # temperature 0.1: mean return -148 vs -177 at 1.0 over 5 episodes (ours, Pendulum-v1)
    ("mppi", "Pendulum-v1"): {"horizon": 15, "temperature": 0.1},
    ("cem", "Pendulum-v1"): {"horizon": 15},
    ("random_shooting", "Pendulum-v1"): {"horizon": 15},
    # 1.5 s look-ahead: swings up in ~60 steps and balances (return ~160 of 200, 2 episodes)
    ("mppi", "CartPoleSwingUp-v0"): {"horizon": 30},
    # the default 20 steps / 3 iterations stay at the bottom (return 84); 30 / 10 swing up (175, 2 episodes)
    ("ilqr", "CartPoleSwingUp-v0"): {"horizon": 30, "iterations": 10},
}


@dataclasses.dataclass
class PlanResult:
    returns: list[float]
    lengths: list[int]
    ms_per_action: list[float]
    """Planning time per action of each episode; with ``compile``, episode 0's leaves out its first action."""
    run_dir: Path | None
    compile_s: float | None = None
    """With ``compile``: the first action's planning time, which holds the torch.compile warm-up (else None)."""

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def mean_ms_per_action(self) -> float:
        """The mean over episodes of ``ms_per_action`` (NaN only where no action but the warm-up was timed)."""
        timed = [ms for ms in self.ms_per_action if not np.isnan(ms)]
        return float(np.mean(timed)) if timed else float("nan")


def resolved_planner_kwargs(planner: str, env_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset for (planner, env) updated by the non-None overrides."""
    kwargs = dict(PLAN_PRESETS.get((planner, env_id), {}))
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs


def run_plan(
    planner: str,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    planner_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    max_steps: int | None = None,
    save: bool = True,
    progress: bool = True,
    threads: int | None = 1,
    device: str = "auto",
) -> PlanResult:
    """Run ``episodes`` closed-loop episodes of ``planner`` on ``env_id`` with its true model.

    Episode i is reset with seed ``seed + i``; the planner is seeded with ``seed``. Writes a run
    directory (config.yaml, metrics.csv with one row per episode, summary.json, plots/) unless
    ``save`` is False.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if threads is not None:
        torch.set_num_threads(threads)  # small batched ops: one thread avoids sync overhead
    planner = planner_key(planner)
    # names and types of the settings, checked as every config is (unknown names suggest the closest valid one)
    kwargs = check_fields(planner_settings(planner), resolved_planner_kwargs(planner, env_id, planner_kwargs or {}))
    bad = [f"{k}={v}" for k, v in kwargs.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad:
        raise ValueError(f"planner settings must be finite numbers, got {', '.join(bad)}")
    dynamics = true_dynamics(env_id)
    if planner == "lqr" and not is_linear(dynamics):
        raise ValueError(f"lqr needs an env whose true model is linear with a quadratic cost (matrices A, B, Q, R, "
                         f"such as LinearDynamics registered with modelrl.envs.register_true_dynamics); {env_id}'s "
                         f"model {type(dynamics).__name__} is not, nor is any built-in env's: use ilqr")
    env = make_env(env_id, seed=seed)
    agent = make_planner(planner, dynamics, env.action_space, seed=seed, device=resolve_device(device), **kwargs)
    warm_up = bool(kwargs.get("compile", False))  # the first action compiles the rollout: timed apart
    limit = max_steps or (env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000)

    run_dir = None
    writer = None
    if save:
        run_dir = create_run_dir(out or default_run_dir(planner, env_id, seed), checkpoints=False)
        save_config(run_dir, {"command": "plan", "planner": planner, "env": env_id, "episodes": episodes,
                              "seed": seed, "max_steps": limit, "planner_kwargs": kwargs})
        writer = MetricsWriter(run_dir, ["episode", "env_step", "wall_s", "eval_return", "length", "ms_per_action"])

    result = PlanResult([], [], [], run_dir)
    step_rewards: list[list[float]] = []
    total_steps = 0
    t_start = time.perf_counter()
    bar = progress_bar(progress)
    with bar:
        task = bar.add_task(f"{planner} on {env_id}", total=episodes * limit)
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            agent.reset()
            rewards: list[float] = []
            plan_time, timed = 0.0, 0
            for _ in range(limit):
                t0 = time.perf_counter()
                action = agent.act(obs)
                if warm_up and result.compile_s is None:
                    result.compile_s = time.perf_counter() - t0
                else:
                    plan_time += time.perf_counter() - t0
                    timed += 1
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(float(reward))
                bar.advance(task)
                if terminated or truncated:
                    break
            total_steps += len(rewards)
            bar.advance(task, limit - len(rewards))
            ret = float(np.sum(rewards))
            result.returns.append(ret)
            result.lengths.append(len(rewards))
            result.ms_per_action.append(1000.0 * plan_time / timed if timed else float("nan"))
            step_rewards.append(rewards)
            bar.update(task, description=f"{planner} on {env_id}: episode {ep + 1} return {ret:.1f}")
            if writer is not None:
                writer.write({"episode": ep, "env_step": total_steps, "wall_s": round(time.perf_counter() - t_start, 3),
                              "eval_return": ret, "length": len(rewards),
                              "ms_per_action": round(result.ms_per_action[-1], 4)})
    env.close()
    if writer is not None and run_dir is not None:  # save
        writer.close()
        summary = {"planner": planner, "env": env_id, "mean_return": result.mean_return,
                   "std_return": float(np.std(result.returns)), "returns": result.returns,
                   "ms_per_action": result.mean_ms_per_action, "compile_s": result.compile_s,
                   "planner_kwargs": kwargs}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        plot_plan(run_dir / "plots" / "returns.png", step_rewards, f"{planner} on {env_id}")
    return result



def plot_plan(path: Path, step_rewards: list[list[float]], title: str) -> None:
    """Two panels: reward per step of every episode, and the episode returns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, r in enumerate(step_rewards):
        ax1.plot(r, lw=1, alpha=0.8, label=f"ep {i}" if len(step_rewards) <= 10 else None)
    ax1.set_xlabel("step")
    ax1.set_ylabel("reward")
    ax1.set_title("reward per step")
    if len(step_rewards) <= 10:
        ax1.legend(fontsize=6, ncol=2)
    returns = [float(np.sum(r)) for r in step_rewards]
    ax2.bar(range(len(returns)), returns, color="tab:blue")
    ax2.axhline(np.mean(returns), color="k", ls="--", lw=1, label=f"mean {np.mean(returns):.1f}")
    ax2.set_xticks(range(len(returns)))
    ax2.set_xlabel("episode")
    ax2.set_ylabel("return")
    ax2.set_title("episode returns")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
