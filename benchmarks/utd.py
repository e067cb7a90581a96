"""The update-to-data study: SAC and MBPO at G in {1, 5, 20} (40 where time allows).

    python -m benchmarks.utd [--envs Pendulum-v1 InvertedPendulum-v5] [--algos sac mbpo] [--utds 1 5 20]
                             [--seeds 0 1 2] [--steps N] [--eval-every N] [--episodes 10] [--resume]
    python -m benchmarks.utd --report      # tables and plot from benchmarks/results/utd.json only

Every run trains through ``modelrl.runner.train`` with the agent's defaults for the task (MBPO:
the official per-task settings, ``modelrl.agents.mbpo.TASK_DEFAULTS``) except G. Recorded per
evaluation: return, training wall-clock (evaluation left out) and, for MBPO, its split between
model training, model rollouts and policy updates. Each finished run is appended to
benchmarks/results/utd.json at once; ``--resume`` skips runs already there. The report gives
returns at fixed env-step budgets, wall-clock per 1,000 env steps, the env steps each run needs
to reach SAC (G = 1)'s return at 10,000 steps, and a plot (docs/figures/utd_<env>.png).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import ROOT, machine, md_table, plot_seed_group, save_results, write_docs_section
from benchmarks.sac_sb3 import at, fmt, load, run_ours

# Steps per run where --steps is not given: SAC long enough to have its 10k-step return, MBPO a third.
DEFAULT_STEPS = {("sac", "Pendulum-v1"): 10_000, ("mbpo", "Pendulum-v1"): 4000,
                 ("sac", "InvertedPendulum-v5"): 10_000, ("mbpo", "InvertedPendulum-v5"): 4000}
DEFAULT_EVAL_EVERY = {"Pendulum-v1": 500, "InvertedPendulum-v5": 250}
FIGURES = ROOT / "docs" / "figures"


def steps_to_reach(curve: dict, target: float) -> int | None:
    """The first evaluated env step whose return is at least ``target``."""
    for s, r in zip(curve["step"], curve["return"]):
        if r >= target:
            return s
    return None


def report(data: dict) -> str:
    m = data["machine"]
    parts = [f"### UTD study: SAC and MBPO at G = 1, 5, 20\n\n`python -m benchmarks.utd` on {m['cpu']}, {m['date']}, "
             f"torch {m['torch']}, 1 thread per run; the machine was shared with other jobs, so seconds are "
             "comparable only within a row's conditions. Returns: mean ± std over seeds of each run's "
             "deterministic evaluation episodes (fixed reset seeds). \"steps to SAC@10k\": env steps until the "
             "return first reaches the mean return of SAC (G = 1) at 10,000 steps. Time split: seconds per 1,000 env "
             "steps in model training / model rollouts / policy updates."]
    for env_id in sorted({r["env"] for r in data["runs"]}):
        runs = [r for r in data["runs"] if r["env"] == env_id]
        ref = [at(r["curve"], 10_000) for r in runs if r["algo"] == "sac" and r["utd"] == 1]
        ref = [v for v in ref if v is not None]
        target = float(np.mean(ref)) if ref else None
        budgets = [1000, 2000, 3000, 5000, 10_000]
        rows = []
        for algo in ("sac", "mbpo"):
            for utd in sorted({r["utd"] for r in runs if r["algo"] == algo}):
                group = [r for r in runs if r["algo"] == algo and r["utd"] == utd]
                per_k = [r["curve"]["train_s"][-1] / r["curve"]["step"][-1] * 1000 for r in group]
                reach = [steps_to_reach(r["curve"], target) if target is not None else None for r in group]
                reach_s = ", ".join("-" if x is None else f"{x}" for x in reach)
                split = "-"
                if algo == "mbpo" and all("time_policy_s" in r["curve"] for r in group):
                    sp = np.mean([[r["curve"][k][-1] / r["curve"]["step"][-1] * 1000
                                   for k in ("time_model_s", "time_rollout_s", "time_policy_s")] for r in group], 0)
                    split = " / ".join(f"{v:.1f}" for v in sp)
                elif "time_policy_s" in group[0]["curve"]:
                    split = f"- / - / {np.mean([r['curve']['time_policy_s'][-1] / r['curve']['step'][-1] * 1000 for r in group]):.1f}"
                eps = sorted({r.get("episodes", data.get("episodes", 10)) for r in group})
                rows.append([algo, utd, len(group), "/".join(map(str, eps))] + [fmt([at(r["curve"], b) for r in group]) for b in budgets]
                            + [reach_s, f"{np.mean(per_k):.0f}", split])
        header = ["algo", "G", "seeds", "eval episodes"] + [f"@{b // 1000}k" for b in budgets] + ["steps to SAC@10k", "s / 1k steps",
                                                                                "model / rollout / policy s per 1k"]
        tgt = f"{target:.0f}" if target is not None else "not measured"
        cost = ""
        sac1 = [r for r in runs if r["algo"] == "sac" and r["utd"] == 1]
        for utd in sorted({r["utd"] for r in runs if r["algo"] == "mbpo"}):
            mb = [r for r in runs if r["algo"] == "mbpo" and r["utd"] == utd]
            if sac1 and mb:
                per = [np.mean([r["curve"]["train_s"][-1] / r["curve"]["step"][-1] for r in g]) for g in (mb, sac1)]
                cost += f" MBPO at G = {utd} costs {per[0] / per[1]:.1f}x SAC (G = 1) per env step."
        parts.append(f"#### {env_id}\n\nSAC (G = 1) at 10,000 steps: {tgt}.{cost}\n\n" + md_table(header, rows)
                     + f"\n\n![UTD study on {env_id}](figures/utd_{env_id}.png)")
    return "\n\n".join(parts)


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    for env_id in sorted({r["env"] for r in data["runs"]}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        runs = [r for r in data["runs"] if r["env"] == env_id]
        for algo, style in (("sac", "--"), ("mbpo", "-")):
            for utd in sorted({r["utd"] for r in runs if r["algo"] == algo}):
                group = [r for r in runs if r["algo"] == algo and r["utd"] == utd]
                plot_seed_group(axes, group, f"{algo.upper()} G={utd}", style, alpha=0.15)
        axes[0].set_xlabel("environment steps")
        axes[1].set_xlabel("training wall-clock (s, 1 thread)")
        axes[1].set_xscale("log")
        for ax in axes:
            ax.set_ylabel("evaluation return")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{env_id}: SAC and MBPO at several update-to-data ratios G")
        fig.tight_layout()
        fig.savefig(FIGURES / f"utd_{env_id}.png", dpi=110)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=["Pendulum-v1", "InvertedPendulum-v5"])
    p.add_argument("--algos", nargs="+", default=["sac", "mbpo"])
    p.add_argument("--utds", type=int, nargs="+", default=[1, 5, 20])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="keep runs already in the results file")
    p.add_argument("--report", action="store_true", help="only rebuild tables and plots from the results file")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load("utd") if (args.resume or args.report) else {}
    data.setdefault("runs", [])
    if not args.report:
        data.update({"machine": machine(), "episodes": args.episodes})
        for seed in args.seeds:
            for env_id in args.envs:
                for algo in args.algos:
                    for utd in args.utds:
                        if any((r["env"], r["algo"], r["utd"], r["seed"]) == (env_id, algo, utd, seed) for r in data["runs"]):
                            continue
                        steps = args.steps or DEFAULT_STEPS.get((algo, env_id), 10_000)
                        every = args.eval_every or DEFAULT_EVAL_EVERY.get(env_id, 1000)
                        curve = run_ours(algo, env_id, seed, steps, every, args.episodes, overrides={"utd": utd})
                        data["runs"].append({"env": env_id, "algo": algo, "utd": utd, "seed": seed, "steps": steps,
                                             "episodes": args.episodes, "curve": curve})
                        save_results("utd", data)
                        print(f"{algo} G={utd} {env_id} seed {seed}: "
                              + ", ".join(f"{s}: {r:.0f}" for s, r in zip(curve["step"], curve["return"]))
                              + f" | {curve['train_s'][-1]:.0f} s training", flush=True)
    plot(data)
    write_docs_section("utd", report(data))


if __name__ == "__main__":
    main()
