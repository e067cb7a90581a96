"""What an environment step costs: MBPO at several G against SAC (ours and Stable-Baselines3's).

    python -m benchmarks.mbpo_cost [--env Pendulum-v1] [--utds 1 5 20] [--blocks 4] [--block 250]
    python -m benchmarks.mbpo_cost --report     # table from benchmarks/results/mbpo_cost.json only

Every contender first takes its own random seed steps (untimed), then ``blocks`` blocks of
``block`` env steps each, timed. The blocks of the contenders are interleaved (SAC, SB3 SAC,
MBPO G = 1, ..., then the next block of each), so all see the same machine load; the ratios
are the point, the absolute seconds depend on the load. A block of 250 steps holds one MBPO
model fit and its rollouts (model_train_freq = 250), so each MBPO block pays its share of both.
No evaluation runs. Reported per 1,000 env steps: process CPU seconds (and wall-clock), and for
MBPO the split between model fits, model rollouts and policy updates (``MBPOAgent.timing``).
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import load_results, machine, md_table, save_results, write_docs_section


class OurLoop:
    """One of our agents stepping its own env: act, step, store, update (the runner's inner loop)."""

    def __init__(self, algo: str, env_id: str, utd: int, seed: int) -> None:
        from modelrl.agents import make
        from modelrl.data.buffer import ReplayBuffer
        from modelrl.envs import make_env

        self.env: Any = make_env(env_id, seed=seed)  # a Box action space (low, high)
        self.agent: Any = make(algo, self.env, seed=seed, utd=utd)  # SAC or MBPO (timing)
        self.buffer = ReplayBuffer(self.agent.obs_dim, self.agent.action_dim, 1_000_000, seed=seed)
        self.rng = np.random.default_rng(seed + 1)
        self.obs, _ = self.env.reset(seed=seed)
        self.step = 0
        self.run(self.agent.config.explore_steps)  # the random seed data, untimed

    def run(self, n: int) -> None:
        for _ in range(n):
            if self.step < self.agent.config.explore_steps:
                a = self.rng.uniform(self.env.action_space.low, self.env.action_space.high).astype(np.float32)
            else:
                a = self.agent.act(self.obs)
            next_obs, r, term, trunc, _ = self.env.step(a)
            self.buffer.add(self.obs, a, r, next_obs, term, trunc)
            self.step += 1
            self.obs = next_obs
            self.agent.update(self.buffer, self.step)
            if term or trunc:
                self.obs, _ = self.env.reset()

    def split(self) -> dict[str, float]:
        timing = self.agent.timing  # SAC has only policy_s
        return {k: timing.get(f"cpu_{k}", 0.0) for k in ("model_s", "rollout_s", "policy_s")}


class SB3Loop:
    """Stable-Baselines3's SAC with its defaults, learning ``n`` steps per call."""

    def __init__(self, env_id: str, seed: int) -> None:
        import gymnasium as gym
        from stable_baselines3 import SAC

        self.model = SAC("MlpPolicy", gym.make(env_id), seed=seed, device="cpu", verbose=0)
        self.first = True
        self.run(self.model.learning_starts)  # its random seed steps, untimed

    def run(self, n: int) -> None:
        self.model.learn(n, reset_num_timesteps=self.first)
        self.first = False

    def split(self) -> dict[str, float]:
        return {}


def measure(env_id: str, utds: list[int], blocks: int, block: int, seed: int) -> list[dict]:
    contenders: dict[str, OurLoop | SB3Loop] = {"SAC (ours), G = 1": OurLoop("sac", env_id, 1, seed),
                                                "SAC (SB3), G = 1": SB3Loop(env_id, seed)}
    for g in utds:
        contenders[f"MBPO, G = {g}"] = OurLoop("mbpo", env_id, g, seed)
    out = {name: {"cpu_s": 0.0, "wall_s": 0.0, "steps": 0} for name in contenders}
    start = {name: c.split() for name, c in contenders.items()}
    for b in range(blocks):
        for name, c in contenders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            c.run(block)
            out[name]["wall_s"] += time.perf_counter() - t0
            out[name]["cpu_s"] += time.process_time() - c0
            out[name]["steps"] += block
        print(f"block {b + 1}/{blocks}: "
              + ", ".join(f"{n} {v['cpu_s'] / v['steps'] * 1000:.1f}" for n, v in out.items())
              + " CPU s / 1k steps", flush=True)
    rows = []
    for name, c in contenders.items():
        end = c.split()
        rows.append({"name": name, **out[name], **{f"cpu_{k}": end[k] - start[name][k] for k in end}})
    return rows


def report(data: dict) -> str:
    m = data["machine"]
    rows = data["rows"]
    ours = next(r for r in rows if r["name"].startswith("SAC (ours)"))
    sb3 = next(r for r in rows if r["name"].startswith("SAC (SB3)"))
    per = {r["name"]: r["cpu_s"] / r["steps"] * 1000 for r in rows}
    table = []
    for r in rows:
        split = "-"
        if "cpu_policy_s" in r:
            split = " / ".join(f"{r.get(f'cpu_{k}_s', 0.0) / r['steps'] * 1000:.1f}"
                               for k in ("model", "rollout", "policy"))
        g = int(r["name"].rsplit("=", 1)[1])
        per_update = (f"{r['cpu_policy_s'] / (r['steps'] * g) * 1e3:.2f}" if "cpu_policy_s" in r else "-")
        table.append([r["name"], f"{per[r['name']]:.1f}", f"{r['wall_s'] / r['steps'] * 1000:.1f}",
                      f"{per[r['name']] / per[ours['name']]:.1f}x", f"{per[r['name']] / per[sb3['name']]:.1f}x",
                      split, per_update])
    return (f"### MBPO's cost per environment step\n\n`python -m benchmarks.mbpo_cost` on {m['cpu']}, {m['date']}, "
            f"torch {m['torch']}, 1 thread. {data['env']}, {data['blocks']} interleaved blocks of {data['block']} "
            "env steps per contender after its random seed steps; no evaluation. Seconds per 1,000 env steps "
            "(process CPU time, and wall-clock); the split and the per-update cost are CPU time.\n\n"
            + md_table(["contender", "CPU s / 1k steps", "wall s / 1k steps", "x our SAC", "x SB3 SAC",
                        "model / rollout / policy CPU s per 1k", "ms per policy update"], table))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--utds", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--block", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only rebuild the table from the results file")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.report:
        data = load_results("mbpo_cost")
    else:
        data = {"machine": machine(), "env": args.env, "blocks": args.blocks, "block": args.block,
                "rows": measure(args.env, args.utds, args.blocks, args.block, args.seed)}
        save_results("mbpo_cost", data)
    text = report(data)
    print(text)
    write_docs_section("mbpo_cost", text)


if __name__ == "__main__":
    main()
