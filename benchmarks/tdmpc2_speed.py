"""TD-MPC2 speed: ms per planning call and per update of the model sizes and the ``cpu`` preset, on one thread.

    python -m benchmarks.tdmpc2_speed [--repeats 5] [--quick] [--threads 2]

Shapes of DMC cartpole-swingup at TD-MPC2's action repeat 2 (5 observations, 1 action). Each case is an agent
built at its preset (``1m``, ``5m``: the official model sizes with every other setting official; ``cpu``), eager
or compiled, timed after warm-up calls (compilation reported apart). Times are medians of thread CPU time
(what a busy shared machine distorts least) and wall-clock. "agent steps / s" is 1 / (plan + update + simulator
step): the training loop's rate after the seed steps. The official code's rate is the one issue 19 measured on
this machine with the official repository patched to run on a CPU: 1.8 steps/s for the 1M model, 0.6 for the 5M
(steps of its training loop; each is one plan and one update; the number of threads it ran on was not
recorded). ``--threads N`` times the eager ``1m`` and ``5m`` cases on N torch threads instead, by wall-clock (thread
CPU time counts one thread only), into ``tdmpc2_speed_threads<N>`` and a section of its own.
Writes benchmarks/results/tdmpc2_speed.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from benchmarks.common import machine, md_table, save_results, write_docs_section
from benchmarks.tdmpc_speed import filled_buffer, timed

OFFICIAL_STEPS_PER_S = {"1m": 1.8, "5m": 0.6}  # issue 19: the official code, CPU-patched, on this machine
CASES = [("1m", False), ("1m", True), ("5m", False), ("5m", True), ("cpu", False), ("cpu", True)]


def measure(preset: str, compile: bool, repeats: int) -> dict:
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=2)
    agent: Any = make("tdmpc2", env, preset=preset, seed=0, device="cpu", compile=compile, pretrain_updates=1)
    buf = filled_buffer(agent, env, 1000)
    obs, _ = env.reset(seed=1)
    t = time.perf_counter()
    agent.update(buf, agent.config.explore_steps)  # the first update (compiles the losses when compiling)
    agent.act(obs)  # the first plan (compiles the latent rollout)
    first_s = time.perf_counter() - t
    plan_wall, plan_cpu = timed(lambda: agent.act(obs), repeats)
    upd_wall, upd_cpu = timed(lambda: agent._update_once(buf), repeats)
    env_wall, env_cpu = timed(lambda: env.step(env.action_space.sample()), 3 * repeats)
    c = agent.config
    step_cpu = plan_cpu + upd_cpu + env_cpu
    out = {"preset": preset, "compile": compile, "params": agent.model.parameter_count(),
           "mlp_dim": c.mlp_dim, "latent_dim": c.latent_dim, "num_q": c.num_q, "num_samples": c.num_samples,
           "iterations": c.iterations, "batch_size": c.batch_size,
           "plan_ms": 1e3 * plan_wall, "plan_cpu_ms": 1e3 * plan_cpu, "update_ms": 1e3 * upd_wall,
           "update_cpu_ms": 1e3 * upd_cpu, "env_step_cpu_ms": 1e3 * env_cpu, "first_calls_s": first_s,
           "steps_per_s_cpu": 1.0 / step_cpu, "steps_per_s": 1.0 / (plan_wall + upd_wall + env_wall)}
    if preset in OFFICIAL_STEPS_PER_S:
        rate = out["steps_per_s_cpu"] if torch.get_num_threads() == 1 else out["steps_per_s"]
        out["x_official"] = rate / OFFICIAL_STEPS_PER_S[preset]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, eager 1m and cpu only, no write")
    parser.add_argument("--cases", default=None, help="comma-separated PRESET or PRESET:compiled (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; more than 1: eager 1m and 5m, "
                                                               "timed by wall-clock")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads > 1:
        return threads_table(args.threads, args.repeats)
    cases = CASES
    if args.cases:
        cases = [(c.split(":")[0], c.endswith(":compiled")) for c in args.cases.split(",")]
    elif args.quick:
        cases = [("1m", False), ("cpu", False)]
    results = []
    for preset, comp in cases:
        r = measure(preset, comp, 2 if args.quick else args.repeats)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.quick or args.cases:
        return
    data: dict[str, Any] = {"machine": machine(), "official_steps_per_s": OFFICIAL_STEPS_PER_S, "results": results}
    save_results("tdmpc2_speed", data)
    m = data["machine"]
    rows = [[r["preset"] + (" compiled" if r["compile"] else ""), f"{r['params'] / 1e6:.2f}M",
             f"{r['mlp_dim']} / {r['latent_dim']} / {r['num_q']}", f"{r['num_samples']} / {r['iterations']}",
             f"{r['plan_cpu_ms']:.0f} ({r['plan_ms']:.0f})", f"{r['update_cpu_ms']:.0f} ({r['update_ms']:.0f})",
             f"{r['steps_per_s_cpu']:.1f}", f"{r['x_official']:.1f}x" if "x_official" in r else "-",
             f"{r['first_calls_s']:.0f}"] for r in results]
    text = (f"### TD-MPC2 speed\n\n`python -m benchmarks.tdmpc2_speed` on {m['cpu']}, {m['date']}, torch {m['torch']}, "
            "1 thread, cartpole-swingup shapes at action repeat 2. Medians of thread CPU time, wall-clock in "
            "parentheses. Agent steps / s: 1 / (plan + update + simulator step). The official code's rate "
            "(issue 19, CPU-patched, this machine): 1M 1.8 steps/s, 5M 0.6.\n\n"
            + md_table(["case", "parameters", "mlp / latent / Q heads", "N / J", "ms / plan", "ms / update",
                        "agent steps / s", "x official", "first calls, s"], rows) + "\n")
    write_docs_section("tdmpc2_speed", text)
    print(text)


def threads_table(threads: int, repeats: int) -> None:
    """The official model sizes, eager, on ``threads`` threads: medians of wall-clock."""
    results = []
    for preset in OFFICIAL_STEPS_PER_S:
        r = measure(preset, False, repeats)
        print(json.dumps(r), flush=True)
        results.append({**r, "threads": threads})
    name = f"tdmpc2_speed_threads{threads}"
    data: dict[str, Any] = {"machine": machine(), "threads": threads, "official_steps_per_s": OFFICIAL_STEPS_PER_S,
                            "results": results}
    save_results(name, data)
    m = data["machine"]
    rows = [[r["preset"], f"{r['plan_ms']:.0f}", f"{r['update_ms']:.0f}", f"{r['steps_per_s']:.1f}",
             f"{OFFICIAL_STEPS_PER_S[r['preset']]:.1f}", f"{r['x_official']:.1f}x"] for r in results]
    text = (f"### TD-MPC2 speed on {threads} threads\n\n`python -m benchmarks.tdmpc2_speed --threads {threads}` on "
            f"{m['cpu']}, {m['date']}, torch {m['torch']}, eager, cartpole-swingup shapes at action repeat 2. "
            "Medians of wall-clock (other work on the machine counts against it). Agent steps / s: "
            "1 / (plan + update + simulator step).\n\n"
            + md_table(["model", "ms / plan", "ms / update", "agent steps / s", "official, steps / s",
                        "x official"], rows) + "\n")
    write_docs_section(name, text)
    print(text)


if __name__ == "__main__":
    main()
