"""MBPO beside SAC on a MuJoCo locomotion task (Hopper-v5 by default), as far as the time allows.

    python -m benchmarks.mbpo_locomotion [--env Hopper-v5] [--steps 20000] [--seed 0] [--out runs/bench]
    python -m benchmarks.mbpo_locomotion --from-run mbpo RUN_DIR --from-run sac RUN_DIR   # record runs
    python -m benchmarks.mbpo_locomotion --report

Each algorithm trains with its defaults for the task (MBPO: the official per-task settings,
``modelrl.agents.mbpo.TASK_DEFAULTS``; SAC: the SAC paper's) in a run directory of its own, so an
interrupted run continues with ``--resume``-style restarts: running the command again resumes both
runs from their checkpoints. ``--from-run`` records run directories trained elsewhere (e.g. with
``modelrl train``); their config must match the algorithm and env. The curves (evaluation return
against env steps, and against training CPU time) go to benchmarks/results/mbpo_locomotion.json,
docs/figures/mbpo_<env>.png and the docs section.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import (
    ROOT,
    add_run,
    curve_from_run,
    load_results,
    machine,
    md_table,
    save_curves_figure,
    write_docs_section,
)

# Where the paper's figure is, for the reader to set beside ours (we quote no values read off it).
PAPER = ("Janner et al. 2019, Figure 2 (Hopper, HalfCheetah, ... on Gym v2; MBPO and SAC mean and std over "
         "seeds against env steps up to 120k-400k)")


def record(algo: str, run: Path, env_id: str | None = None) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if cfg["train"]["algo"] != algo or (env_id is not None and cfg["train"]["env"] != env_id):
        raise SystemExit(f"{run} is {cfg['train']['algo']} on {cfg['train']['env']}, not {algo} on {env_id}")
    entry = {"algo": algo, "env": cfg["train"]["env"], "seed": cfg["train"]["seed"], "run": str(run),
             "agent": cfg["agent"], "curve": curve_from_run(run)}
    return add_run("mbpo_locomotion", entry, ("algo", "env", "seed"), {"machine": machine()})


def train_or_resume(algo: str, env_id: str, steps: int, seed: int, out: Path) -> Path:
    from modelrl.runner.train import TrainConfig, train

    run = out / f"{algo}-{env_id}-{seed}"
    if (run / "checkpoints" / "latest.pt").exists():
        train(None, resume=run, progress=True)
    else:
        train(TrainConfig(algo, env_id, steps, seed=seed, eval_every=1000, eval_episodes=5), out=run, progress=True)
    return run


def report(data: dict) -> str:
    m = data["machine"]
    parts = [f"### MBPO and SAC on MuJoCo locomotion\n\n`python -m benchmarks.mbpo_locomotion` on {m['cpu']}, "
             f"{m['date']}, 1 thread, a 2-core machine shared with other jobs (so CPU seconds, not wall-clock). "
             f"Each algorithm at its defaults for the task; 5 deterministic evaluation episodes every 1,000 steps. "
             f"The paper's curves: {PAPER}."]
    for env_id in sorted({r["env"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["env"] == env_id]
        last = min(r["curve"]["step"][-1] for r in runs)
        budgets = [b for b in (5000, 6000, 8000, 10_000, 15_000, 20_000, 50_000, 100_000) if b <= last + 50]
        rows = []
        for r in sorted(runs, key=lambda r: (r["algo"], r["seed"])):
            c = r["curve"]
            vals = []
            for b in budgets:
                hit = [v for s, v in zip(c["step"], c["return"]) if s >= b]
                vals.append(f"{hit[0]:.0f}" if hit else "-")
            per_k = c["train_cpu_s"][-1] / c["step"][-1] * 1000
            split = "-"
            if "time_cpu_policy_s" in c:
                split = " / ".join(f"{c[f'time_cpu_{k}_s'][-1]:.0f}" if f"time_cpu_{k}_s" in c else "-"
                                   for k in ("model", "rollout", "policy"))
            rows.append([r["algo"], r["seed"], c["step"][-1], *vals, f"{max(c['return']):.0f}", f"{per_k:.0f}", split])
        parts.append(f"#### {env_id}\n\n" + md_table(
            ["algo", "seed", "env steps run", *[f"@{b // 1000}k" for b in budgets], "best", "CPU s / 1k steps",
             "model / rollout / policy CPU s (total)"], rows) + f"\n\n![{env_id}](figures/mbpo_{env_id}.png)")
    return "\n\n".join(parts)


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for env_id in sorted({r["env"] for r in data["runs"]}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for r in [r for r in data["runs"] if r["env"] == env_id]:
            c = r["curve"]
            label = f"{r['algo'].upper()} seed {r['seed']}"
            axes[0].plot(c["step"], c["return"], "-o", ms=3, label=label)
            axes[1].plot(np.array(c["train_cpu_s"]) / 60, c["return"], "-o", ms=3, label=label)
        save_curves_figure(fig, axes, ("environment steps", "training CPU time (min, 1 thread)"),
                           "evaluation return (5 episodes)", f"{env_id}: MBPO (official settings) and SAC",
                           f"mbpo_{env_id}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--from-run", nargs=2, action="append", metavar=("ALGO", "DIR"), default=[])
    p.add_argument("--report", action="store_true", help="only rebuild the table and plot from the results file")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    data = load_results("mbpo_locomotion")
    for algo, run in args.from_run:
        data = record(algo, Path(run))
    if not args.report and not args.from_run:
        for algo in ("sac", "mbpo"):
            data = record(algo, train_or_resume(algo, args.env, args.steps, args.seed, args.out), args.env)
    plot(data)
    write_docs_section("mbpo_locomotion", report(data))


if __name__ == "__main__":
    main()
