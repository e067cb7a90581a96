"""CEM's candidate sampling: a clamped Gaussian against PETS's truncated normal (issue 18).

    python -m benchmarks.cem_sampling [--episodes 10] [--envs Pendulum-v1 CartPoleSwingUp-v0]

PETS (handful-of-trials ``optimizers/cem.py``) and mbrl-lib (``CEMOptimizer``) draw CEM's candidates
from a normal truncated at +-2 std whose variance shrinks to min(var, (distance to a bound / 2)^2);
modelrl's CEM drew a Gaussian and clamped it to the bounds, which puts the mass beyond a bound exactly
on it. Here both plan with the true model (PETS's CEM settings: 500 samples, 50 elites, 5 iterations,
alpha 0.1; horizon 15 and 25), closed loop, episode i reset with seed i, one thread. The learned-model
effect (the MPC agent's ``truncated`` option) is measured by ``benchmarks.mpc_learning``.
Writes benchmarks/results/cem_sampling.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import machine, md_table, save_results, write_docs_section
from benchmarks.planners import episode
from modelrl.envs import make_env, true_dynamics
from modelrl.planners import CEM


def run(env_id: str, horizon: int, truncated: bool, episodes: int) -> dict:
    env = make_env(env_id)
    planner = CEM(true_dynamics(env_id), env.action_space, horizon=horizon, truncated=truncated, seed=0)
    returns, spent, steps = [], 0.0, 0
    for i in range(episodes):
        ret, sec, n = episode(planner.act, planner.reset, env, seed=i)
        returns.append(ret)
        spent, steps = spent + sec, steps + n
    return {"env": env_id, "horizon": horizon, "truncated": truncated, "returns": returns,
            "mean": float(np.mean(returns)), "std": float(np.std(returns)), "ms_per_action": 1000 * spent / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1", "CartPoleSwingUp-v0"])
    parser.add_argument("--horizons", type=int, nargs="+", default=[15, 25])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, results = [], []
    for env_id in args.envs:
        for h in args.horizons:
            pair = [run(env_id, h, t, args.episodes) for t in (False, True)]
            results += pair
            clamp, trunc = pair
            rows.append([env_id, h, f"{clamp['mean']:.1f} ± {clamp['std']:.1f}",
                         f"{trunc['mean']:.1f} ± {trunc['std']:.1f}", f"{trunc['mean'] - clamp['mean']:+.1f}",
                         f"{clamp['ms_per_action']:.1f} / {trunc['ms_per_action']:.1f}"])
            print(rows[-1], flush=True)
    m = machine()
    save_results("cem_sampling", {"machine": m, "episodes": args.episodes, "runs": results})
    text = ("### CEM sampling: clamped Gaussian against PETS's truncated normal\n\n"
            f"`python -m benchmarks.cem_sampling` on {m['cpu']}, {m['date']}, torch {m['torch']}, one thread. True "
            "model, PETS's CEM (500 samples, 50 elites, 5 iterations, alpha 0.1), "
            f"{args.episodes} closed-loop episodes (reset seeds 0-{args.episodes - 1}); "
            "return mean ± std over episodes.\n\n"
            + md_table(["task", "horizon", "clamped Gaussian", "truncated normal (PETS)", "difference",
                        "ms per action (clamped / truncated)"], rows))
    write_docs_section("cem_sampling", text)
    print(text)


if __name__ == "__main__":
    main()
