"""TD-MPC and TD-MPC2 learning curves through the common run loop, seeds side by side, with their cost.

    python -m benchmarks.tdmpc_learning                       # Pendulum-v1, 3,000 steps, 3 seeds
    python -m benchmarks.tdmpc_learning --env dmc:cartpole-swingup --steps 12500 --eval-every 1250 \\
        --seeds 0 1 --final-episodes 10                        # 100k env steps at action repeat 8
    python -m benchmarks.tdmpc_learning --env dmc:pendulum-swingup --steps 25000 --eval-every 2500 --seeds 0
    python -m benchmarks.tdmpc_learning --algo tdmpc2 --env dmc:pendulum-swingup --steps 100000 --eval-every 10000 \
        --seeds 0 1 --out ../runs/tdmpc2_pendulum_swingup      # TD-MPC2, cpu preset, action repeat 2

``--algo tdmpc2`` runs TD-MPC2 (issue 19) and, on the tasks of ``benchmarks/reference/tdmpc2_official.csv``,
plots and tabulates the official TD-MPC2 results beside it. The official trainer counts a ``step`` per action
(``trainer/online_trainer.py`` line 125), each of which its DeepMind Control wrapper repeats twice
(``envs/dmcontrol.py`` line 57): its "100k steps" are 100k agent steps, 200k env steps, and are drawn there.

Each seed is one ``modelrl train tdmpc`` (or ``tdmpc2``) run (one torch thread each; ``--jobs`` at a time).
``--steps`` counts agent steps, as TD-MPC does; the tables and plot count env steps (agent steps
x action repeat, the official per-task repeat unless ``--action-repeat``). Times per run come from
its metrics.csv: wall-clock, wall-clock outside evaluation (``train_wall_s``) and process CPU time
outside evaluation (``train_cpu_s``, which does not grow with other jobs on a shared machine).
``--final-episodes N`` re-evaluates each final agent on N episodes (``modelrl eval``).
Acceptance (issue 4): Pendulum-v1 >= -200 within 3,000 env steps on every seed (``cpu`` preset);
cartpole-swingup >= 800 at 100k env steps on 2 seeds within 30 minutes each.
Writes benchmarks/results/tdmpc_<task>.json and .png and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
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
from modelrl.agents import agent_classes
from modelrl.runner.options import parse_assignments

TARGETS = {"Pendulum-v1": -200.0, "dmc:cartpole-swingup": 800.0}  # issue 4's acceptance thresholds
OFFICIAL_TDMPC2 = ROOT / "benchmarks" / "reference" / "tdmpc2_official.csv"


def slug(env_id: str) -> str:
    """Pendulum-v1 -> pendulum, dmc:cartpole-swingup -> cartpole_swingup (results file names)."""
    name = env_id.split(":", 1)[-1].split("-v")[0] if not env_id.startswith("dmc:") else env_id[4:]
    return name.lower().replace("-", "_")


def command(env_id: str, seed: int, steps: int, preset: str, out: Path, eval_every: int, eval_episodes: int,
            action_repeat: int, overrides: dict, checkpoint_every: int | None = None,
            resume: bool = False, algo: str = "tdmpc") -> list[str]:
    """One training run as a child process (one torch thread each, so seeds can run side by side); with
    ``resume``, the run in ``out`` continues from its last checkpoint (its config.yaml decides the rest).
    ``steps``, ``eval_every`` and ``checkpoint_every`` count agent steps here (the loop's own unit is env steps)."""
    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from modelrl.runner.train import TrainConfig, train\n"
            "a = json.loads(sys.argv[1])\n"
            "if a['resume']:\n"
            "    train(None, resume=a['out'], progress=False)\n"
            "else:\n"
            "    k = a['action_repeat']\n"
            "    train(TrainConfig(a['algo'], a['env'], a['steps'] * k, seed=a['seed'], preset=a['preset'],"
            " eval_every=a['eval_every'] * k, eval_episodes=a['eval_episodes'],"
            " checkpoint_every=a['checkpoint_every'] and a['checkpoint_every'] * k,"
            " action_repeat=k), overrides=a['overrides'], out=a['out'], progress=False)\n")
    arg = json.dumps({"env": env_id, "seed": seed, "steps": steps, "preset": preset, "out": str(out),
                      "eval_every": eval_every, "eval_episodes": eval_episodes, "action_repeat": action_repeat,
                      "overrides": overrides, "checkpoint_every": checkpoint_every, "resume": resume,
                      "algo": algo})
    return [sys.executable, "-c", code, arg]


def curve(run: Path, action_repeat: int) -> list[dict]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))

    def steps(r: dict) -> dict:  # runs from before metrics.csv had agent_step logged agent steps as env_step
        if r.get("agent_step"):
            return {"agent_step": int(r["agent_step"]), "env_step": int(r["env_step"])}
        return {"agent_step": int(r["env_step"]), "env_step": int(r["env_step"]) * action_repeat}

    return [{**steps(r), "wall_s": float(r["wall_s"]), "train_wall_s": float(r["train_wall_s"]),
             "train_cpu_s": float(r["train_cpu_s"]) if r.get("train_cpu_s") else None,
             "eval_return": float(r["eval_return"]), "eval_return_std": float(r["eval_return_std"])} for r in rows]


def collect(runs: dict[int, Path], repeat: int, target: float | None, final_episodes: int = 0) -> list[dict]:
    """One row per seed of ``runs`` (seed -> run directory): its curve, final and best return, first env step at
    ``target`` and times. A seed not started yet, or before its first evaluation (a run still going, with
    ``--collect-only``), is left out with a message."""
    per_seed = []
    for s, run in runs.items():
        c = curve(run, repeat) if (run / "metrics.csv").exists() else []
        if not c:  # only with --collect-only: a seed not started yet, or before its first evaluation
            print(f"seed {s}: no evaluation yet in {run}, left out of the table")
            continue
        first = None if target is None else next((p["env_step"] for p in c if p["eval_return"] >= target), None)
        # the run path relative to the repository: no machine paths in the committed results
        row = {"seed": s, "run": os.path.relpath(run, ROOT), "final_env_step": c[-1]["env_step"],
               "final_return": c[-1]["eval_return"],
               "best_return": max(p["eval_return"] for p in c), "first_env_step_at_target": first,
               "wall_s": c[-1]["wall_s"], "train_wall_s": c[-1]["train_wall_s"], "train_cpu_s": c[-1]["train_cpu_s"],
               "curve": c}
        if final_episodes:
            from modelrl.runner.evaluate import evaluate_run

            ev = evaluate_run(run, episodes=final_episodes, seed=1000)  # reset seeds unseen in training evals
            row["final_eval"] = {"episodes": final_episodes, "mean": ev["mean_return"], "std": ev["std_return"],
                                 "returns": ev["returns"], "reset_seeds": ev["reset_seeds"]}
        per_seed.append(row)
    return per_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="tdmpc", choices=["tdmpc", "tdmpc2"])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000, help="agent steps")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--action-repeat", type=int, default=None, help="default: the official per-task repeat")
    parser.add_argument("--eval-every", type=int, default=500, help="agent steps")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=0, help="re-evaluate each final agent on N episodes")
    parser.add_argument("--target", type=float, default=None, help="default: the issue's threshold for --env")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained side by side")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench_<algo>_<task>")
    parser.add_argument("--set", nargs="*", default=[], help="extra config fields KEY=VALUE (YAML values)")
    parser.add_argument("--collect-only", action="store_true", help="summarise existing run directories <out>/seed<S>")
    parser.add_argument("--tag", default=None, help="results and docs section named tdmpc_<task>_<tag> (a variant)")
    parser.add_argument("--tdmpc-results", default="tdmpc_dmc",
                        help="with --algo tdmpc2: the results (benchmarks/results/NAME.json) whose TD-MPC seeds are "
                             "shown beside it: the DMC table (default) or a run of this benchmark, e.g. "
                             "tdmpc_pendulum_swingup_200k")
    args = parser.parse_args()
    task = slug(args.env)
    repeat = args.action_repeat or agent_classes(args.algo)[0].default_action_repeat(args.env)
    title = {"tdmpc": "TD-MPC", "tdmpc2": "TD-MPC2"}[args.algo]
    target = args.target if args.target is not None else TARGETS.get(args.env)
    out = args.out or Path(f"runs/bench_{args.algo}_{task}")
    overrides = parse_assignments(args.set, "--set")
    runs = {s: out / f"seed{s}" for s in args.seeds}
    if not args.collect_only:
        # a run directory that exists is resumed from its last checkpoint; a finished one is skipped
        pending = [s for s in args.seeds if not _finished(runs[s], args.steps * repeat)]
        while pending:
            batch, pending = pending[:args.jobs], pending[args.jobs:]
            procs = [subprocess.Popen(command(args.env, s, args.steps, args.preset, runs[s], args.eval_every,
                                              args.eval_episodes, repeat, overrides,
                                              checkpoint_every=max(1, args.eval_every // 4),
                                              resume=(runs[s] / "config.yaml").exists(), algo=args.algo))
                     for s in batch]
            for proc in procs:
                if proc.wait() != 0:
                    raise SystemExit(f"a training run failed (exit {proc.returncode})")
    per_seed = collect(runs, repeat, target, args.final_episodes)
    for p in per_seed:  # --collect-only on runs still going: their latest evaluation, marked as such
        p["finished"] = p["final_env_step"] >= args.steps * repeat
    finals = [p["final_eval"]["mean"] if "final_eval" in p else p["final_return"] for p in per_seed if p["finished"]]
    data = {"machine": machine(), "env": args.env, "preset": args.preset, "overrides": overrides,
            "agent_steps": args.steps, "action_repeat": repeat, "env_steps": args.steps * repeat,
            "eval_every_agent_steps": args.eval_every, "eval_episodes": args.eval_episodes,
            "final_episodes": args.final_episodes, "target": target,
            "final_mean": float(np.mean(finals)) if finals else None,
            "final_std": float(np.std(finals)) if finals else None, "seeds": per_seed}
    if target is not None:
        data["all_reach_target"] = all(p["first_env_step_at_target"] is not None for p in per_seed)
    name = f"{args.algo}_{task}" + (f"_{args.tag}" if args.tag else "")
    official = official_tdmpc2(args.env) if args.algo == "tdmpc2" else {}
    if official:
        data["official"] = official
    save_results(name, data)
    tdmpc = our_tdmpc_curves(args.env, args.tdmpc_results) if args.algo == "tdmpc2" else []  # issue 19
    _plot(per_seed, target, args.env, RESULTS / f"{name}.png", title, official, tdmpc)
    m = data["machine"]

    def minutes(x):
        return "-" if x is None else f"{x / 60:.1f}"

    rows = []
    for p in per_seed:
        final = (f"{p['final_eval']['mean']:.0f} ± {p['final_eval']['std']:.0f}" if "final_eval" in p
                 else f"{p['final_return']:.0f}" if p["finished"]
                 else f"(running; {p['final_return']:.0f} at {p['final_env_step']:,})")
        rows.append([p["seed"], final, f"{p['best_return']:.0f}",
                     "-" if target is None else (p["first_env_step_at_target"] or "not reached"),
                     minutes(p["wall_s"]), minutes(p["train_wall_s"]), minutes(p["train_cpu_s"])])
    extra = f", overrides {overrides}" if overrides else ""
    final_note = (f"; the final return is a re-evaluation of the last agent on {args.final_episodes} episodes "
                  "(reset seeds 1000+)" if args.final_episodes else "")
    variant = (" --set " + " ".join(args.set) if args.set else "") + (f" --tag {args.tag}" if args.tag else "")
    text = (f"### {title} on {args.env} (`{args.preset}` preset{', ' + args.tag if args.tag else ''})\n\n"
            f"`python -m benchmarks.tdmpc_learning{'' if args.algo == 'tdmpc' else ' --algo ' + args.algo} "
            f"--env {args.env}{variant}` on {m['cpu']}, {m['date']}, torch {m['torch']}, "
            f"1 thread per run, {len(per_seed)} seed(s) run {args.jobs} at a time{extra}. "
            f"{args.steps} agent steps at action repeat {repeat} = "
            f"{args.steps * repeat:,} env steps; evaluation every {args.eval_every * repeat:,} env steps "
            f"({args.eval_episodes} episodes){final_note}."
            + (f" Target: {target:.0f}." if target is not None else "") + "\n\n"
            + md_table(["seed", f"return at {args.steps * repeat:,} env steps", "best", "first env step at target",
                        "wall-clock, min", "wall-clock outside evaluation, min", "CPU time outside evaluation, min"],
                       rows)
            + ("\n\n" + (f"Mean final return: **{data['final_mean']:.0f} ± {data['final_std']:.0f}**"
                          f" ({len(finals)} of {len(per_seed)} seeds finished)" if finals
                          else "No run has finished yet")
               + f". Curves with their times: `benchmarks/results/{name}.json`, plot `{name}.png`."))
    if official:
        def at(env_step: int, seeds: list[dict]) -> str:
            got = [next((q["eval_return"] for q in p["curve"] if q["env_step"] == env_step), None) for p in seeds]
            return ", ".join("-" if g is None else f"{g:.0f}" for g in got) or "-"

        text += ("\n\nThe official TD-MPC2 (`benchmarks/reference/tdmpc2_official.csv`, nicklashansen/tdmpc2 "
                 "`results/tdmpc2/`): its step counts actions at action repeat 2, so its step 100k is 200k env "
                 "steps here.\n\n" + md_table(
                     ["official step", "env steps", "official seeds", "official mean", "ours at these env steps",
                      f"our TD-MPC (`{args.tdmpc_results}`)"],
                     [[f"{int(k):,}", f"{o['env_step']:,}", ", ".join(f"{r:.0f}" for r in o["returns"]),
                       f"{o['mean']:.0f}", at(o["env_step"], per_seed), at(o["env_step"], tdmpc)]
                      for k, o in official.items() if int(k) > 0]))
    write_docs_section(name, text)
    print(text)


def _finished(run: Path, env_steps: int) -> bool:
    if not (run / "metrics.csv").exists():
        return False
    with open(run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1:]
    return bool(last) and int(last[0]["env_step"]) >= env_steps


def official_tdmpc2(env_id: str) -> dict:
    """The official TD-MPC2 returns for ``env_id`` (dmc:TASK): official step -> the seeds' returns, with the env
    step it stands for (official steps are agent steps at action repeat 2)."""
    if not env_id.startswith("dmc:"):
        return {}
    points: dict[int, list[float]] = {}
    with open(OFFICIAL_TDMPC2) as f:
        for r in csv.DictReader(f):
            if r["task"] == env_id[4:]:
                points.setdefault(int(r["official_step"]), []).append(float(r["return"]))
    return {str(step): {"env_step": 2 * step, "returns": v, "mean": float(np.mean(v))} for step, v in points.items()}


def our_tdmpc_curves(env_id: str, name: str = "tdmpc_dmc") -> list[dict]:
    """Our TD-MPC's seeds on the same DMC task, if run: from the DeepMind Control table (``benchmarks.tdmpc_dmc``)
    or from results ``name`` of this benchmark (``--algo tdmpc``, e.g. runs continued to more env steps)."""
    path = RESULTS / f"{name}.json"
    if not env_id.startswith("dmc:") or not path.exists():
        return []
    data = json.loads(path.read_text())
    if "tasks" not in data:  # this benchmark's own results
        return data["seeds"] if data.get("env") == env_id else []
    task = env_id[len("dmc:"):]
    return next((t["seeds"] for t in data["tasks"] if t["task"] == task), [])


def _plot(per_seed: list[dict], target: float | None, env_id: str, path: Path, title: str = "TD-MPC",
          official: dict | None = None, tdmpc: list[dict] | None = None) -> None:
    """The seeds' curves; for TD-MPC2, the official points and ``tdmpc`` (our TD-MPC's seeds, dotted) beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for p in per_seed:
        c = p["curve"]
        ax.plot([q["env_step"] for q in c], [q["eval_return"] for q in c], marker="o", label=f"seed {p['seed']}")
    for s in tdmpc or []:
        c = s["curve"]
        ax.plot([q["env_step"] for q in c], [q["eval_return"] for q in c], ls=":", color="grey", marker=".",
                label=f"our TD-MPC seed {s['seed']}")
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    for step, o in (official or {}).items():
        if int(step) > 0:
            ax.errorbar([o["env_step"]], [o["mean"]], yerr=[[o["mean"] - min(o["returns"])],
                        [max(o["returns"]) - o["mean"]]], fmt="s", color="black", capsize=4,
                        label=f"official TD-MPC2 at its step {int(step):,} (mean, min-max)")
    ax.set_title(f"{title}, {env_id}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
