"""Device check: every algorithm a few hundred steps on CUDA and on the CPU, in one run.

    python -m benchmarks.device_check [--quick] [--devices cpu,cuda] [--docs]
    make device-check

For each case (algorithm, preset, task) and each device: ms per plan (``agent.act``), ms per
update (``agent.update`` after the seed phase: one TD-MPC update, G SAC updates, one model refit
for MPC), and env steps per second of the whole loop (act + env step + buffer + update) over a
few hundred steps. CUDA times are read after ``torch.cuda.synchronize()``. The first plan and the
first update are timed apart (they hold the compilation with ``--compile``, and MPC's first fit). The ``paper`` presets
(TD-MPC's official settings, PETS's) are timed with fewer repeats on the CPU, where one call
costs seconds. Gymnasium tasks only (Pendulum-v1, HalfCheetah-v5), so it needs gymnasium and
mujoco but not dm_control. Writes benchmarks/results/device_check.json (or --out) and, with
--docs, the table in docs/benchmarks.md. docs/benchmarks.md, "Device check", says how to run it
on a machine with a GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, md_table, write_docs_section

# (name, algo, preset, env, overrides, loop steps): the short loop is measured on every device
CASES: list[tuple[str, str, str | None, str, dict[str, Any], int]] = [
    ("tdmpc cpu", "tdmpc", "cpu", "Pendulum-v1", {"compile": False}, 200),
    ("tdmpc paper", "tdmpc", "paper", "HalfCheetah-v5", {}, 200),
    ("tdmpc2 cpu", "tdmpc2", "cpu", "Pendulum-v1", {}, 200),
    ("tdmpc2 5m", "tdmpc2", "5m", "HalfCheetah-v5", {}, 200),
    ("sac", "sac", "sac", "HalfCheetah-v5", {}, 300),
    ("mbpo G=20", "mbpo", None, "Pendulum-v1", {"utd": 20}, 100),
    ("mpc v1.5", "mpc", "v1.5", "Pendulum-v1", {}, 200),
    ("pets-cpu", "mpc", "pets-cpu", "Pendulum-v1", {}, 100),
    ("pets paper", "mpc", "pets", "Pendulum-v1", {}, 100),
]
# --compile adds each of these with compile=True (TD-MPC: latent rollout and losses; SAC: its losses; MPC: the
# planner's rollout)
COMPILED = ("tdmpc cpu", "tdmpc paper", "tdmpc2 cpu", "tdmpc2 5m", "sac", "mpc v1.5", "pets-cpu")
SEED_STEPS = 1000  # random transitions in the buffer before timing (a full MBPO model fit, TD-MPC batches)
CPU_SLOW = {"tdmpc paper", "tdmpc2 5m", "pets paper"}  # seconds per call on one CPU thread: few repeats, a short loop


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(case: tuple, device: torch.device, repeats: int, loop_scale: float) -> dict:
    from modelrl.agents import make
    from modelrl.data.buffer import ReplayBuffer
    from modelrl.envs import make_env

    name, algo, preset, env_id, over, loop_steps = case
    env = make_env(env_id, seed=0)
    over = dict(over)
    if algo in ("tdmpc", "tdmpc2"):
        over["pretrain_updates"] = 1  # time one update, not the 1000 that end the seed phase
    agent: Any = make(algo, env, preset=preset, seed=0, device=str(device), **over)  # attributes per algo
    explore = max(int(agent.config.explore_steps), 1)
    buf = ReplayBuffer(agent.obs_dim, agent.action_dim, 100_000, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    step = 0
    for _ in range(max(SEED_STEPS, explore)):  # random data, then the first update (MPC's first model fit)
        a = rng.uniform(-1, 1, agent.action_dim).astype(np.float32)
        nobs, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nobs, te, tr)
        step += 1
        obs = nobs if not (te or tr) else env.reset()[0]
    if algo == "tdmpc":
        agent.step = agent.config.schedule_steps  # plan at the full horizon
    sync(device)
    t = time.perf_counter()
    agent.update(buf, step)  # the first update: compiles TD-MPC's losses (compile=True), fits MPC's model
    sync(device)
    first_update_s = time.perf_counter() - t
    t = time.perf_counter()
    agent.act(obs)  # the first plan: compiles the rollout (compile=True)
    sync(device)
    first_plan_s = time.perf_counter() - t
    slow = device.type == "cpu" and name in CPU_SLOW
    reps = 2 if slow else repeats
    plan_s = timed(lambda: agent.act(obs), device, reps)
    if algo == "mpc":  # MPC learns by refitting its model at episode ends: time one refit
        update_s = timed(lambda: agent.trainer.fit(*(buf.all()[k] for k in ("obs", "action", "next_obs"))),
                         device, 1)
    else:  # one env step's learning (MBPO: G SAC updates; its model fits every 250 steps aside)
        update_s = timed(lambda: agent.update(buf, step + 1), device, reps)
    n = max(3, int(loop_steps * loop_scale * (0.05 if slow else 1.0)))
    sync(device)
    t = time.perf_counter()
    for _ in range(n):  # the whole loop, as the runner does it
        a = agent.act(obs)
        nobs, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nobs, te, tr)
        step += 1
        agent.update(buf, step)
        obs = nobs if not (te or tr) else env.reset()[0]
    sync(device)
    loop_s = time.perf_counter() - t
    env.close()
    return {"case": name, "algo": algo, "preset": preset, "env": env_id, "device": str(device),
            "plan_ms": 1e3 * plan_s, "update_ms": 1e3 * update_s,
            "update_kind": {"mpc": "model refit", "mbpo": "G=20 SAC updates",
                            "sac": "1 SAC update"}.get(algo, "1 update"),
            "loop_steps": n, "steps_per_s": n / loop_s, "first_plan_s": first_plan_s, "first_update_s": first_update_s}


def report(rows: list[dict], devices: list[str]) -> str:
    by = {(r["case"], r["device"]): r for r in rows}
    header = ["case", "task", "update is"]
    for d in devices:
        header += [f"ms/plan {d}", f"ms/update {d}", f"steps/s {d}", f"first plan + update s {d}"]
    if len(devices) > 1:
        header += [f"plan {devices[0]}/{devices[1]}", f"steps/s {devices[1]}/{devices[0]}"]
    table = []
    for case in dict.fromkeys(r["case"] for r in rows):
        first = next(r for r in rows if r["case"] == case)
        line = [case, first["env"], first["update_kind"]]
        for d in devices:
            r = by.get((case, d))
            line += [f"{r['plan_ms']:.1f}", f"{r['update_ms']:.1f}", f"{r['steps_per_s']:.1f}",
                     f"{r['first_plan_s'] + r['first_update_s']:.1f}"] if r else ["-"] * 4
        if len(devices) > 1 and all((case, d) in by for d in devices):
            a, b = by[(case, devices[0])], by[(case, devices[1])]
            line += [f"{a['plan_ms'] / b['plan_ms']:.1f}x", f"{b['steps_per_s'] / a['steps_per_s']:.1f}x"]
        elif len(devices) > 1:
            line += ["-", "-"]
        table.append(line)
    return md_table(header, table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default=None, help="comma-separated (default: cpu, plus cuda where present)")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="a fifth of the loop steps and 3 repeats")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads on the CPU (1: as the runner)")
    p.add_argument("--compile", action="store_true", help="also the compiled variants (compile time reported apart)")
    p.add_argument("--out", default=str(RESULTS / "device_check.json"))
    p.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = p.parse_args(argv)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases = list(CASES)
    if args.compile:
        cases += [(f"{c[0]} compiled", c[1], c[2], c[3], {**c[4], "compile": True}, c[5])
                  for c in CASES if c[0] in COMPILED]
    cases = [c for c in cases if args.cases is None or c[0] in args.cases.split(",")]
    torch.set_num_threads(args.cpu_threads)
    repeats, scale = (3, 0.2) if args.quick else (args.repeats, 1.0)
    rows, t0 = [], time.perf_counter()
    for case in cases:
        # compiled variants on the accelerator only (on the CPU they cost minutes of compilation and were
        # measured here, see docs), unless no accelerator is in the run
        run_on = [d for d in devices if d != "cpu"] if case[0].endswith("compiled") else devices
        for d in run_on or devices:
            t = time.perf_counter()
            row = measure(case, torch.device(d), repeats, scale)
            rows.append(row)
            print(f"{case[0]:>12} on {d:<6} plan {row['plan_ms']:9.2f} ms  update {row['update_ms']:9.2f} ms  "
                  f"{row['steps_per_s']:8.1f} steps/s  ({time.perf_counter() - t:.0f} s)", flush=True)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    data: dict[str, Any] = {"machine": {**machine(), "gpu": gpu, "cpu_threads": args.cpu_threads}, "devices": devices,
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2))
    table = report(rows, devices)
    print(table)
    print(f"{data['seconds']:.0f} s in all; wrote {args.out}")
    if args.docs:
        m = data["machine"]
        write_docs_section("device_check", f"Measured {m['date']} on {gpu or 'no GPU'} and {m['cpu']} "
                           f"({args.cpu_threads} CPU thread), torch {m['torch']}; `python -m benchmarks.device_check"
                           f"{' --quick' if args.quick else ''}`.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
