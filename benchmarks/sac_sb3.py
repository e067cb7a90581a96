"""Our SAC against Stable-Baselines3's SAC on Pendulum-v1: returns at fixed env-step budgets and speed.

    python -m benchmarks.sac_sb3 [--seeds 0 1 2] [--steps 20000] [--eval-every 1000] [--episodes 10] [--resume]
    python -m benchmarks.sac_sb3 --report      # table and plot from benchmarks/results/sac_sb3.json only

Same machine, same run, one torch thread each, seeds interleaved (ours then SB3 on even seeds,
SB3 first on odd ones). Both use their defaults, which agree (SAC paper Table 1; learning starts
after 100 random steps; G = 1). Evaluation: ``episodes`` deterministic episodes from the same
reset seeds for both, every ``eval_every`` steps; the training clock leaves evaluation out.
Each finished run is appended to benchmarks/results/sac_sb3.json at once, so an interrupted
benchmark keeps what it measured (and ``--resume`` skips runs already there).
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    add_run,
    at,
    common_args,
    fmt,
    load_results,
    machine,
    md_table,
    per_1k,
    run_ours,
    write_docs_section,
)
from modelrl.runner.evaluate import eval_reset_seed

ENV = "Pendulum-v1"



def run_sb3(seed: int, steps: int, eval_every: int, episodes: int) -> dict:
    """SB3 SAC with its defaults, trained in chunks of ``eval_every`` steps (the clock stops for evaluation)."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC

    env = gym.make(ENV)
    model = SB3SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    eval_env = gym.make(ENV)
    curve: dict[str, Any] = {"step": [], "return": [], "return_std": [], "train_s": [], "train_cpu_s": []}
    train_s, train_cpu, done = 0.0, 0.0, 0
    t_total = time.perf_counter()
    while done < steps:
        chunk = min(eval_every, steps - done)
        t0, c0 = time.perf_counter(), time.process_time()
        model.learn(chunk, reset_num_timesteps=done == 0)
        train_s += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        done += chunk
        returns = []
        for i in range(episodes):
            obs, _ = eval_env.reset(seed=eval_reset_seed(seed, i))
            total, over = 0.0, False
            while not over:
                action, _ = model.predict(obs, deterministic=True)
                obs, r, term, trunc, _ = eval_env.step(action)
                total, over = total + float(r), term or trunc
            returns.append(total)
        curve["step"].append(done)
        curve["return"].append(float(np.mean(returns)))
        curve["return_std"].append(float(np.std(returns)))
        curve["train_s"].append(round(train_s, 3))
        curve["train_cpu_s"].append(round(train_cpu, 3))
    curve["total_s"] = time.perf_counter() - t_total
    return curve


def report(data: dict) -> str:
    """The docs section: returns at the budgets and seconds per 1,000 steps, per library."""
    runs = data["runs"]
    budgets = [2000, 5000, 10_000, 20_000]
    rows = []
    for lib in ("modelrl", "sb3"):
        mine = [r for r in runs if r["lib"] == lib]
        if not mine:
            continue
        cpu = per_1k(mine, "train_cpu_s")
        rows.append([lib, len(mine)] + [fmt([at(r["curve"], b) for r in mine]) for b in budgets]
                    + [f"{per_1k(mine):.1f}", "-" if cpu is None else f"{cpu:.1f}"])
    m = data["machine"]
    ratio = ""
    ours = [r for r in runs if r["lib"] == "modelrl"]
    sb3 = [r for r in runs if r["lib"] == "sb3"]
    if ours and sb3:
        wall_ratio = per_1k(ours) / per_1k(sb3)  # type: ignore[operator]  # every curve has train_s
        ratio = f"\n\nTraining time per environment step, ours / SB3: **{wall_ratio:.2f}** (wall-clock)"
        paired = [(o, b) for o in ours for b in sb3 if o["seed"] == b["seed"] and "train_cpu_s" in o["curve"]
                  and "train_cpu_s" in b["curve"]]
        if paired:
            cpu_ratio = (per_1k([o for o, _ in paired], "train_cpu_s")  # type: ignore[operator]  # paired: recorded
                         / per_1k([b for _, b in paired], "train_cpu_s"))
            ratio += (f", **{cpu_ratio:.2f}**"
                      f" (process CPU time, seeds {', '.join(str(o['seed']) for o, _ in paired)})")
        ratio += "."
    return (f"### SAC: ours against Stable-Baselines3\n\n`python -m benchmarks.sac_sb3` on {m['cpu']}, {m['date']}, "
            f"torch {m['torch']}, 1 thread (machine shared with other jobs, so absolute seconds vary; the two "
            f"libraries ran interleaved). Pendulum-v1, G = 1, defaults of both (SAC paper Table 1), "
            f"{data['episodes']} deterministic evaluation episodes at each budget, mean ± std over seeds.\n\n"
            + md_table(["library", "seeds"] + [f"return @ {b // 1000}k" for b in budgets]
                       + ["wall s / 1000 steps", "CPU s / 1000 steps"], rows)
            + ratio + "\n\n![SAC against SB3](figures/sac_sb3.png)")


def plot(data: dict) -> None:
    """docs/figures/sac_sb3.png: return against env steps and against training seconds, both libraries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.common import plot_seed_group, save_curves_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lib in ("modelrl", "sb3"):
        runs = [r for r in data["runs"] if r["lib"] == lib]
        if not runs:
            continue
        plot_seed_group(axes, runs, lib)
    save_curves_figure(fig, axes, ("environment steps", "training wall-clock (s, 1 thread, shared machine)"),
                       "evaluation return", "SAC on Pendulum-v1, G = 1: modelrl against Stable-Baselines3", "sac_sb3")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_args(p)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_results("sac_sb3") if (args.resume or args.report) else {}
    data.setdefault("runs", [])
    header = {"machine": machine(), "env": ENV, "steps": args.steps, "episodes": args.episodes}
    for seed in [] if args.report else args.seeds:
        order = ("modelrl", "sb3") if seed % 2 == 0 else ("sb3", "modelrl")
        for lib in order:
            if any(r["lib"] == lib and r["seed"] == seed for r in data["runs"]):
                continue
            if lib == "modelrl":
                curve = run_ours("sac", ENV, seed, args.steps, args.eval_every, args.episodes)
            else:
                curve = run_sb3(seed, args.steps, args.eval_every, args.episodes)
            data = add_run("sac_sb3", {"lib": lib, "seed": seed, "curve": curve}, ("lib", "seed"), header)
            print(f"{lib} seed {seed}: " + ", ".join(f"{s}: {r:.0f}" for s, r in zip(curve["step"], curve["return"]))
                  + f" | {curve['train_s'][-1]:.0f} s training", flush=True)
    plot(data)
    write_docs_section("sac_sb3", report(data))


if __name__ == "__main__":
    main()
