"""PETS at the paper's settings: the rate of one planning call against a batched matmul of its shapes.

    python -m benchmarks.pets_speed [--repeats 5] [--preset pets]

The MPC agent with the ``pets`` preset (ensemble of 5 members, 4 hidden layers of 200 units,
TS-inf with 20 particles, CEM with 500 samples and 5 iterations over 15 steps) is fitted once on
1,000 random Pendulum-v1 transitions; then one ``act`` (a whole CEM plan) is timed. Its FLOPs are
those of the model's dense layers (2 x multiply-adds per row and layer, every step of every
iteration). The reference is a batched matmul of the dominant shape, ``[E, R / E, 200] x
[E, 200, 200]`` for R = 10,000 rows, timed in the same run, in alternation with the plans, on one
thread; thread CPU time, medians (and the minor page faults of a plan). The plan is timed twice per
repeat: with the eager rollout and with it through ``torch.compile`` (the MPC agent's ``compile`` option;
compilation in the warm-up, untimed). ``MODELRL_KEEP_FREED_MEMORY=0`` measures it with glibc's own
allocator settings (``modelrl.device.keep_freed_memory``).
Writes benchmarks/results/pets_speed.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from benchmarks.common import machine, md_table, save_results, write_docs_section
from modelrl.device import compiled, keep_freed_memory
from modelrl.planners.base import batched_rollout_returns


def main(argv: list[str] | None = None) -> int:
    from benchmarks.eval_speed import ready_agent

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--preset", default="pets")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    agent = ready_agent("mpc", args.preset, "Pendulum-v1", 1)
    c, model = agent.config, agent.model
    rows = c.num_samples * c.particles
    e, hidden = model.ensemble_size, model.hidden_size
    x, w = torch.randn(e, rows // e, hidden), torch.randn(e, hidden, hidden)
    mm_flops = 2 * rows * hidden * hidden
    obs = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    eager = agent.planner._rollout
    rollouts = {"eager": eager, "compiled": compiled(batched_rollout_returns, True)}
    compile_s = time.perf_counter()
    for fn in rollouts.values():  # warm-up; the compiled one compiles here
        agent.planner._rollout = fn
        agent.act(obs)
    compile_s = time.perf_counter() - compile_s
    plan_s: dict[str, list[float]] = {k: [] for k in rollouts}
    faults: dict[str, list[int]] = {k: [] for k in rollouts}  # minor page faults during a plan (the kernel's time)
    mm_s = []
    for _ in range(args.repeats):  # alternate, so load on a shared machine hits all alike
        for name, fn in rollouts.items():
            agent.planner._rollout = fn
            f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time()
            agent.act(obs)
            plan_s[name].append(time.thread_time() - t)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
        t = time.thread_time()
        for _ in range(10):
            torch.bmm(x, w)
        mm_s.append((time.thread_time() - t) / 10)
    agent.planner._rollout = eager
    mm = statistics.median(mm_s)
    flops = agent.planning_flops()
    out = []
    for name in rollouts:
        plan = statistics.median(plan_s[name])
        out.append({"rollout": name, "preset": args.preset, "rows": rows, "ensemble": e, "hidden": hidden,
                    "layers": len(model.net.layers), "horizon": c.horizon, "iterations": c.iterations, "plan_s": plan,
                    "plan_gflop": flops / 1e9, "plan_gflops": flops / plan / 1e9,
                    "bmm_shape": [e, rows // e, hidden, hidden], "bmm_gflops": mm_flops / mm / 1e9,
                    "ratio": (flops / plan) / (mm_flops / mm),
                    "page_faults": int(statistics.median(faults[name]))})
    keep = keep_freed_memory()  # what the agent asked of the allocator (False: off or not glibc)
    save_results("pets_speed", {"machine": machine(), "repeats": args.repeats, "results": out,
                                "warm_up_and_compile_s": compile_s, "keep_freed_memory": keep})
    table = md_table(["preset", "model rollout", "rows (samples x particles)", "GFLOP / plan", "s / plan (CPU)",
                      "plan GFLOP/s", "bmm GFLOP/s (same shape, same run)", "plan / bmm", "page faults / plan"],
                     [[args.preset, r["rollout"], rows, f"{r['plan_gflop']:.0f}", f"{r['plan_s']:.2f}",
                       f"{r['plan_gflops']:.1f}", f"{r['bmm_gflops']:.1f}", f"{100 * r['ratio']:.0f}%",
                       f"{r['page_faults']:,}"] for r in out])
    m = machine()
    write_docs_section("pets_speed", f"### PETS at the paper's settings against a batched matmul\n\n"
                       f"`python -m benchmarks.pets_speed` on {m['cpu']}, {m['date']}, torch {m['torch']}, 1 thread, "
                       f"thread CPU time, medians of {args.repeats} alternating repeats; freed memory kept for "
                       f"reuse (`modelrl.device.keep_freed_memory`): {'yes' if keep else 'no'}.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
