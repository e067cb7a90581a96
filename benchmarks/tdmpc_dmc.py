"""The TD-MPC DeepMind Control table (issue 18): six tasks, 100k env steps, seeds side by side, beside
the official results.

    python -m benchmarks.tdmpc_dmc --out ../runs/tdmpc_dmc              # run (or resume) every job, then the table
    python -m benchmarks.tdmpc_dmc --out ../runs/tdmpc_dmc --collect-only   # the table from what has run so far

Each (task, seed) is one ``modelrl train tdmpc`` run in ``<out>/<task>/seed<S>`` with one torch thread,
``--jobs`` at a time, longest first. A job whose run directory exists is resumed from its last checkpoint
(so a stopped session loses at most ``--checkpoint-every`` agent steps), and a finished one is skipped.
Action repeat is the official per-domain value (``modelrl.agents.tdmpc.default_action_repeat``), the
evaluation the official one: the mean of 10 episodes every 20,000 env steps (official ``eval_freq 20000``,
``eval_episodes 10``). The final return of a run is its evaluation at 100k env steps.

The official results are ``benchmarks/reference/tdmpc_official_100k.csv``: the curves up to 100k env
steps of nicklashansen/tdmpc ``results/<task>.csv`` (5 seeds each) and, for pendulum-swingup, the TD-MPC
runs published in nicklashansen/tdmpc2 ``results/tdmpc/pendulum-swingup.csv`` (4 runs). Target (issue 18):
each task at >= 90% of the official mean or inside the official seeds' spread.

Writes benchmarks/results/tdmpc_dmc.json and .png and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import collections
import csv
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RESULTS,
    ROOT,
    machine,
    md_table,
    save_results,
    write_docs_section,
)
from benchmarks.tdmpc_learning import command, curve
from modelrl.agents.tdmpc import default_action_repeat
from modelrl.runner.options import parse_assignments

TASKS = ["cartpole-swingup", "pendulum-swingup", "cup-catch", "finger-spin", "walker-walk", "cheetah-run"]
REFERENCE = ROOT / "benchmarks" / "reference" / "tdmpc_official_100k.csv"


def official() -> dict[str, dict[int, list[float]]]:
    """task -> env step -> the official seeds' returns."""
    table: dict[str, dict[int, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    with open(REFERENCE) as f:
        for r in csv.DictReader(f):
            table[r["task"]][int(r["env_step"])].append(float(r["return"]))
    return table


def run_dir(out: Path, task: str, seed: int) -> Path:
    return out / task / f"seed{seed}"


def rows_of(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def finished(run: Path, task: str, env_steps: int) -> bool:
    points = curve(run, default_action_repeat(f"dmc:{task}")) if rows_of(run) else []
    return bool(points) and points[-1]["env_step"] >= env_steps


def run_jobs(jobs: list[tuple[str, int]], args, overrides: dict) -> None:
    """A pool of ``--jobs`` child processes over the (task, seed) jobs, longest (most agent steps) first."""
    pending = sorted(jobs, key=lambda j: -agent_steps_of(j[0], args.env_steps))
    running: list[tuple[subprocess.Popen, str, int]] = []
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            task, seed = pending.pop(0)
            repeat = default_action_repeat(f"dmc:{task}")
            steps = agent_steps_of(task, args.env_steps)
            run = run_dir(args.out, task, seed)
            if finished(run, task, args.env_steps):
                continue
            eval_every = args.eval_every // repeat
            cmd = command(f"dmc:{task}", seed, steps, args.preset, run, eval_every, 10, repeat, overrides,
                          checkpoint_every=max(1, eval_every // 4), resume=(run / "config.yaml").exists())
            print(f"[tdmpc_dmc] {'resume' if (run / 'config.yaml').exists() else 'start'} {task} seed {seed}",
                  flush=True)
            running.append((subprocess.Popen(cmd), task, seed))
        time.sleep(5)
        for item in list(running):
            proc, task, seed = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"[tdmpc_dmc] {task} seed {seed} ended (exit {proc.returncode})", flush=True)
                if proc.returncode != 0:
                    failed.append((task, seed))
    if failed:
        raise SystemExit(f"runs failed: {failed}")


def agent_steps_of(task: str, env_steps: int) -> int:
    return env_steps // default_action_repeat(f"dmc:{task}")


def collect(args, overrides: dict) -> dict:
    ref = official()
    tasks = []
    for task in args.tasks:
        repeat = default_action_repeat(f"dmc:{task}")
        steps = agent_steps_of(task, args.env_steps)
        seeds = []
        for seed in args.seeds:
            run = run_dir(args.out, task, seed)
            if not rows_of(run):
                continue
            points = [{k: p[k] for k in ("env_step", "eval_return", "train_cpu_s", "wall_s")}
                      for p in curve(run, repeat)]
            done = points[-1]["env_step"] >= args.env_steps
            seeds.append({"seed": seed, "run": f"{task}/seed{seed}", "finished": done, "curve": points,
                          "final_return": points[-1]["eval_return"] if done else None,
                          "last_env_step": points[-1]["env_step"], "train_cpu_s": points[-1]["train_cpu_s"]})
        at = ref[task].get(args.env_steps, [])
        finals = [s["final_return"] for s in seeds if s["finished"]]
        entry = {"task": task, "action_repeat": repeat, "agent_steps": steps, "seeds": seeds,
                 "official_returns": at, "official_mean": float(np.mean(at)) if at else None}
        if finals and at:
            mean = float(np.mean(finals))
            entry.update(mean=mean, ratio=mean / entry["official_mean"] if entry["official_mean"] else None,
                         in_spread=bool(min(at) <= mean <= max(at)) or mean >= max(at),
                         met=bool(mean >= 0.9 * entry["official_mean"] or min(at) <= mean))
        tasks.append(entry)
    return {"machine": machine(), "preset": args.preset, "overrides": overrides, "env_steps": args.env_steps,
            "eval_every_env_steps": args.eval_every, "eval_episodes": 10, "tasks": tasks}


def report(data: dict) -> str:
    rows = []
    for t in data["tasks"]:
        per_seed = ", ".join(f"{s['final_return']:.0f}" if s["finished"] else f"({s['last_env_step'] // 1000}k: "
                             f"{s['curve'][-1]['eval_return']:.0f})" for s in t["seeds"]) or "-"
        cpu = ", ".join(f"{s['train_cpu_s'] / 60:.0f}" for s in t["seeds"] if s["finished"] and s["train_cpu_s"]) or "-"
        off = t["official_returns"]
        rows.append([t["task"], t["action_repeat"], per_seed, f"{t['mean']:.0f}" if "mean" in t else "-",
                     f"{t['official_mean']:.0f} ({min(off):.0f}-{max(off):.0f}, {len(off)} seeds)" if off else "-",
                     f"{100 * t['ratio']:.0f}%" if t.get("ratio") is not None else "-",
                     ("yes" if t["met"] else "no") if "met" in t else "-", cpu])
    m = data["machine"]
    return (f"### TD-MPC on DeepMind Control, 100k env steps (`{data['preset']}` preset)\n\n"
            f"`python -m benchmarks.tdmpc_dmc` on {m['cpu']}, {m['date']}, torch {m['torch']}, one torch thread per "
            f"run, two runs at a time. Official action repeat per domain; evaluation every "
            f"{data['eval_every_env_steps']:,} env steps, mean of 10 episodes; the return is the evaluation at "
            f"{data['env_steps']:,} env steps (a run still going shows its latest evaluation in brackets). "
            f"Official: nicklashansen/tdmpc `results/*.csv` at 100k (pendulum-swingup: the TD-MPC runs in "
            f"nicklashansen/tdmpc2 `results/tdmpc/`), mean (min-max). Target: >= 90% of the official mean or "
            f"inside its seed spread. CPU minutes: process CPU time outside evaluation, per seed.\n\n"
            + md_table(["task", "repeat", "ours per seed", "ours mean", "official mean (spread)", "ours / official",
                        "target met", "CPU min per run"], rows)
            + "\n\nCurves beside the official seeds: `benchmarks/results/tdmpc_dmc.png`; data "
              "`benchmarks/results/tdmpc_dmc.json`.")


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = official()
    tasks = data["tasks"]
    cols = 3
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        steps = sorted(ref[t["task"]])
        if steps:
            mean = [np.mean(ref[t["task"]][s]) for s in steps]
            lo = [np.min(ref[t["task"]][s]) for s in steps]
            hi = [np.max(ref[t["task"]][s]) for s in steps]
            ax.plot(steps, mean, color="black", lw=2, label="official mean")
            ax.fill_between(steps, lo, hi, color="grey", alpha=0.3, label="official min-max")
        for s in t["seeds"]:
            c = s["curve"]
            ax.plot([p["env_step"] for p in c], [p["eval_return"] for p in c], marker="o", ms=3,
                    label=f"modelrl seed {s['seed']}")
        ax.set_title(t["task"])
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.set_xlim(0, data["env_steps"] * 1.02)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--env-steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=20_000, help="env steps (official eval_freq 20000)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("../runs/tdmpc_dmc"),
                        help="run directories (outside the repo)")
    parser.add_argument("--set", nargs="*", default=[], help="extra config fields KEY=VALUE (YAML values)")
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args()
    overrides = parse_assignments(args.set, "--set")
    if not args.collect_only:
        run_jobs([(t, s) for t in args.tasks for s in args.seeds], args, overrides)
    data = collect(args, overrides)
    save_results("tdmpc_dmc", data)
    plot(data, RESULTS / "tdmpc_dmc.png")
    text = report(data)
    write_docs_section("tdmpc_dmc", text)
    print(text)


if __name__ == "__main__":
    main()
