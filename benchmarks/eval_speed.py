"""Evaluation speed: K episodes in lockstep (one batched plan per step) against one after another.

    python -m benchmarks.eval_speed [--episodes 10] [--rounds 3] [--cases ...]

Per case an agent is made ready to plan (MPC: 1,000 random transitions and one model fit; TD-MPC:
its initial networks, whose planning cost does not depend on training) and ``runner.train.evaluate``
runs the same K episodes (same reset seeds) both ways, alternating, ``rounds`` times, in one process
on one thread; the medians of process CPU time and wall-clock are compared. Writes
benchmarks/results/eval_speed.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._speed_probe import EVAL_CASES, random_buffer
from benchmarks.common import machine, md_table, save_results, write_docs_section

CASES = {  # name: (algo, preset, env, action repeat), the cases benchmarks.baseline_speed times too
    "mpc v1.5": EVAL_CASES["eval-mpc-v1.5"],
    "tdmpc cpu": EVAL_CASES["eval-tdmpc-cpu"],
    "pets-cpu": EVAL_CASES["eval-pets-cpu"],
}


def ready_agent(algo: str, preset: str, env_id: str, repeat: int):
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env(env_id, seed=0, action_repeat=repeat)
    agent: Any = make(algo, env, preset=preset, seed=0, device="cpu", compile=False)  # eager, as recorded
    if algo == "mpc":  # fit the model once on random data, as after the seed phase
        agent.update(random_buffer(agent, env, 1000), max(agent.config.explore_steps, 1000))
    else:
        agent.step = agent.config.schedule_steps  # full planning horizon
    env.close()
    return agent


def measure(name: str, episodes: int, rounds: int) -> dict:
    from modelrl.runner.train import eval_envs, evaluate

    algo, preset, env_id, repeat = CASES[name]
    agent = ready_agent(algo, preset, env_id, repeat)
    envs = eval_envs(env_id, episodes, 0, repeat)
    times: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in ("sequential", "lockstep")}
    returns: dict[str, list[float]] = {}
    for _ in range(rounds):
        for mode in ("sequential", "lockstep"):
            c, w = time.process_time(), time.perf_counter()
            returns[mode] = evaluate(agent, envs, episodes, 0, repeat, lockstep=mode == "lockstep")
            times[mode]["cpu"].append(time.process_time() - c)
            times[mode]["wall"].append(time.perf_counter() - w)
    for env in envs:
        env.close()
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    return {"case": name, "env": env_id, "episodes": episodes, "rounds": rounds,
            "sequential_cpu_s": med["sequential"]["cpu"], "lockstep_cpu_s": med["lockstep"]["cpu"],
            "sequential_wall_s": med["sequential"]["wall"], "lockstep_wall_s": med["lockstep"]["wall"],
            "speedup_cpu": med["sequential"]["cpu"] / med["lockstep"]["cpu"],
            "speedup_wall": med["sequential"]["wall"] / med["lockstep"]["wall"],
            "sequential_return": float(np.mean(returns["sequential"])),
            "lockstep_return": float(np.mean(returns["lockstep"]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.cases.split(","):
        row = measure(name, args.episodes, args.rounds)
        rows.append(row)
        print(f"{name}: sequential {row['sequential_cpu_s']:.1f} CPU s, lockstep {row['lockstep_cpu_s']:.1f} CPU s "
              f"({row['speedup_cpu']:.2f}x); returns {row['sequential_return']:.1f} / {row['lockstep_return']:.1f}",
              flush=True)
    save_results("eval_speed", {"machine": machine(), "rows": rows})
    table = md_table(["agent", "task", "episodes", "one after another (CPU s)", "lockstep (CPU s)", "speed-up (CPU)",
                      "speed-up (wall)", "mean return: sequential / lockstep"],
                     [[r["case"], r["env"], r["episodes"], f"{r['sequential_cpu_s']:.1f}", f"{r['lockstep_cpu_s']:.1f}",
                       f"{r['speedup_cpu']:.2f}x", f"{r['speedup_wall']:.2f}x",
                       f"{r['sequential_return']:.1f} / {r['lockstep_return']:.1f}"] for r in rows])
    m = machine()
    write_docs_section("eval_speed", f"Measured {m['date']} on {m['cpu']}, 1 thread, medians of {args.rounds} "
                       f"alternating rounds; `python -m benchmarks.eval_speed`.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
