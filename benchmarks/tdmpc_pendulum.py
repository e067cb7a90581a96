"""TD-MPC on Pendulum-v1 with the ``cpu`` preset: evaluation return over the first 3,000 env steps, 3 seeds.

    python -m benchmarks.tdmpc_pendulum [--seeds 0 1 2] [--steps 3000] [--jobs 2] [--preset cpu]

Each seed is one ``modelrl train tdmpc`` run through the common loop (evaluation every 500 steps at
the next episode end, 5 episodes with fixed reset seeds). Acceptance (issue 4): mean evaluation
return >= -200 within 3,000 env steps on every seed. Writes benchmarks/results/tdmpc_pendulum.json
(curves with wall-clock), benchmarks/results/tdmpc_pendulum.png and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RESULTS,
    machine,
    md_table,
    save_results,
    write_docs_section,
)

TARGET = -200.0


def command(seed: int, steps: int, preset: str, out: Path, eval_every: int, eval_episodes: int,
            overrides: dict) -> list[str]:
    """One training run as a child process (one torch thread each, so seeds can run side by side)."""
    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from modelrl.runner.train import TrainConfig, train\n"
            "a = json.loads(sys.argv[1])\n"
            "train(TrainConfig('tdmpc', 'Pendulum-v1', a['steps'], seed=a['seed'], preset=a['preset'],"
            " eval_every=a['eval_every'], eval_episodes=a['eval_episodes']), overrides=a['overrides'],"
            " out=a['out'], progress=False)\n")
    arg = json.dumps({"seed": seed, "steps": steps, "preset": preset, "out": str(out), "eval_every": eval_every,
                      "eval_episodes": eval_episodes, "overrides": overrides})
    return [sys.executable, "-c", code, arg]


def curve(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{"env_step": int(r["env_step"]), "wall_s": float(r["wall_s"]), "eval_return": float(r["eval_return"]),
                 "eval_return_std": float(r["eval_return_std"])} for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained side by side")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tdmpc_pendulum"))
    parser.add_argument("--set", nargs="*", default=[], help="extra config fields KEY=JSON")
    parser.add_argument("--collect-only", action="store_true", help="summarise existing run directories")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    runs = {s: args.out / f"seed{s}" for s in args.seeds}
    if not args.collect_only:
        pending = list(args.seeds)
        while pending:
            batch, pending = pending[:args.jobs], pending[args.jobs:]
            procs = []
            for s in batch:
                procs.append(subprocess.Popen(command(s, args.steps, args.preset, runs[s], args.eval_every,
                                                      args.eval_episodes, overrides)))
            for p in procs:
                if p.wait() != 0:
                    raise SystemExit(f"a training run failed (exit {p.returncode})")
    curves = {s: curve(r) for s, r in runs.items()}
    per_seed = []
    for s, c in curves.items():
        first = next((p["env_step"] for p in c if p["eval_return"] >= TARGET), None)
        per_seed.append({"seed": s, "final_step": c[-1]["env_step"], "final_return": c[-1]["eval_return"],
                         "best_return": max(p["eval_return"] for p in c), "first_step_at_target": first,
                         "wall_s": c[-1]["wall_s"], "curve": c})
    finals = [p["final_return"] for p in per_seed]
    data = {"machine": machine(), "env": "Pendulum-v1", "preset": args.preset, "overrides": overrides,
            "steps": args.steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
            "target": TARGET, "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
            "all_reach_target": all(p["first_step_at_target"] is not None for p in per_seed), "seeds": per_seed}
    save_results("tdmpc_pendulum", data)
    _plot(per_seed, RESULTS / "tdmpc_pendulum.png")
    m = data["machine"]
    rows = [[p["seed"], f"{p['final_return']:.0f}", f"{p['best_return']:.0f}", p["first_step_at_target"] or "not reached",
             f"{p['wall_s'] / 60:.1f}"] for p in per_seed]
    extra = f", overrides {overrides}" if overrides else ""
    text = (f"### TD-MPC on Pendulum-v1 (`{args.preset}` preset)\n\n`python -m benchmarks.tdmpc_pendulum` on {m['cpu']}, "
            f"{m['date']}, torch {m['torch']}, 1 thread per run, {len(per_seed)} seeds run {args.jobs} at a time{extra}. "
            f"{args.steps} env steps, evaluation every {args.eval_every} steps ({args.eval_episodes} episodes). "
            f"Target: {TARGET:.0f} within {args.steps} steps.\n\n"
            + md_table(["seed", f"return at {args.steps}", "best", "first step >= -200", "wall-clock, min"], rows)
            + f"\n\nMean at {args.steps} steps: **{data['final_mean']:.0f} ± {data['final_std']:.0f}**. "
              "Curves with wall-clock: `benchmarks/results/tdmpc_pendulum.json`, plot `tdmpc_pendulum.png`.")
    write_docs_section("tdmpc_pendulum", text)
    print(text)


def _plot(per_seed: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for p in per_seed:
        c = p["curve"]
        ax.plot([q["env_step"] for q in c], [q["eval_return"] for q in c], marker="o", label=f"seed {p['seed']}")
    ax.axhline(TARGET, color="grey", ls="--", lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    ax.set_title("TD-MPC, Pendulum-v1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
