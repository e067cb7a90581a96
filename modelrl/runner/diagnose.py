"""``modelrl diagnose RUN``: how good is a run's learned model on transitions it never saw?

Collects fresh episodes with uniform random actions (seeded, so the numbers repeat), then
reports the one-step error per state dimension, the open-loop k-step error curve, and a plot of
predicted against real trajectories. Writes ``diagnostics.json`` and ``plots/diagnostics.png``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from modelrl.envs import make_env
from modelrl.models.diagnostics import k_step_error, one_step_error, predicted_trajectory
from modelrl.runner.rundir import atomic_write_text, load_agent


def collect_random_episodes(env_id: str, episodes: int, seed: int, action_repeat: int = 1):
    """``episodes`` fresh episodes of uniform random actions: list of (obs[T+1, S], actions[T, A])."""
    env = make_env(env_id, seed=seed, action_repeat=action_repeat)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]  # a Box (make_env)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        observations, actions, done = [obs], [], False
        while not done:
            a = rng.uniform(low, high).astype(np.float32)
            obs, _, term, trunc, _ = env.step(a)
            observations.append(obs)
            actions.append(a)
            done = term or trunc
        out.append((np.stack(observations), np.stack(actions)))
    env.close()
    return out


def diagnose(run_dir: str | Path, episodes: int = 5, k: int = 30, seed: int = 12345) -> dict:
    """Model errors of a run's learned dynamics on fresh random episodes; writes json and a plot."""
    run_dir = Path(run_dir)
    agent, saved = load_agent(run_dir)
    dynamics = getattr(agent, "dynamics", None)
    if dynamics is None or not hasattr(dynamics, "model"):
        raise ValueError(f"the {saved['train']['algo']} agent of {run_dir} has no learned dynamics model to diagnose")
    model = dynamics.model
    data = collect_random_episodes(saved["train"]["env"], episodes, seed, saved["train"].get("action_repeat", 1))
    obs = np.concatenate([o[:-1] for o, _ in data])
    nxt = np.concatenate([o[1:] for o, _ in data])
    act = np.concatenate([a for _, a in data])
    one = one_step_error(model, obs, act, nxt)
    k = min(k, min(len(a) for _, a in data))
    ks = k_step_error(model, data, k)
    result = {"episodes": episodes, "transitions": int(obs.shape[0]), "one_step_mse": one["mse"],
              "one_step_normalized_mse": one["normalized_mse"], "one_step_rmse_per_dim": one["rmse_per_dim"].tolist(),
              "k_step_mse": ks.tolist()}
    atomic_write_text(run_dir / "diagnostics.json", json.dumps(result, indent=2))
    horizon = min(50, len(data[0][1]))
    pred = predicted_trajectory(model, data[0][0][0], data[0][1][:horizon])
    _plot(run_dir / "plots" / "diagnostics.png", data[0][0][: horizon + 1], pred, ks, saved["train"]["env"])
    return result


def _plot(path: Path, real: np.ndarray, pred: np.ndarray, ks: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = real.shape[1]
    cols = min(dims, 4)
    rows = (dims + cols - 1) // cols + 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for d in range(dims):
        ax = axes[d // cols][d % cols]
        ax.plot(real[:, d], "k-", lw=1.2, label="real")
        ax.plot(pred[:, d], "r--", lw=1.2, label="model (open loop)")
        ax.set_title(f"obs[{d}]", fontsize=9)
        if d == 0:
            ax.legend(fontsize=7)
    for d in range(dims, (rows - 1) * cols):
        axes[d // cols][d % cols].axis("off")
    ax = axes[-1][0]
    ax.semilogy(np.arange(1, len(ks) + 1), ks, "o-", ms=3)
    ax.set_xlabel("k (steps open loop)")
    ax.set_ylabel("MSE")
    ax.set_title("k-step error", fontsize=9)
    for c in range(1, cols):
        axes[-1][c].axis("off")
    fig.suptitle(f"model diagnostics: {title}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


