"""PETS at the paper's settings: the rate of one planning call against a batched matmul of its shapes.

    python -m benchmarks.pets_speed [--repeats 5] [--preset pets]

The MPC agent with the ``pets`` preset (ensemble of 5 members, 4 hidden layers of 200 units,
TS-inf with 20 particles, CEM with 500 samples and 5 iterations over 15 steps) is fitted once on
1,000 random Pendulum-v1 transitions; then one ``act`` (a whole CEM plan) is timed. Its FLOPs are
those of the model's dense layers (2 x multiply-adds per row and layer, every step of every
iteration). The reference is a batched matmul of the dominant shape, ``[E, R / E, 200] x
[E, 200, 200]`` for R = 10,000 rows, timed in the same run, in alternation with the plans, on one
thread; thread CPU time, medians. Writes benchmarks/results/pets_speed.json and a section of
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from benchmarks.common import machine, md_table, save_results, write_docs_section


def plan_flops(agent) -> float:
    """Dense-layer FLOPs of one plan: iterations x horizon x rows x 2 x sum(in x out) over the layers."""
    c, model = agent.config, agent.model
    per_row = 2 * sum(w.shape[1] * w.shape[2] for w in model.weights)
    rows = c.num_samples * c.particles
    return c.iterations * c.horizon * rows * per_row


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
    agent.act(obs)  # warm-up
    plan_s, mm_s = [], []
    for _ in range(args.repeats):  # alternate, so load on a shared machine hits both alike
        t = time.thread_time()
        agent.act(obs)
        plan_s.append(time.thread_time() - t)
        t = time.thread_time()
        for _ in range(10):
            torch.bmm(x, w)
        mm_s.append((time.thread_time() - t) / 10)
    plan, mm = statistics.median(plan_s), statistics.median(mm_s)
    flops = plan_flops(agent)
    row = {"preset": args.preset, "rows": rows, "ensemble": e, "hidden": hidden, "layers": len(model.weights),
           "horizon": c.horizon, "iterations": c.iterations, "plan_s": plan, "plan_gflop": flops / 1e9,
           "plan_gflops": flops / plan / 1e9, "bmm_shape": [e, rows // e, hidden, hidden],
           "bmm_gflops": mm_flops / mm / 1e9, "ratio": (flops / plan) / (mm_flops / mm)}
    save_results("pets_speed", {"machine": machine(), "repeats": args.repeats, "result": row})
    table = md_table(["preset", "rows (samples x particles)", "GFLOP / plan", "s / plan (CPU)", "plan GFLOP/s",
                      "bmm GFLOP/s (same shape, same run)", "plan / bmm"],
                     [[args.preset, rows, f"{row['plan_gflop']:.0f}", f"{plan:.2f}", f"{row['plan_gflops']:.1f}",
                       f"{row['bmm_gflops']:.1f}", f"{100 * row['ratio']:.0f}%"]])
    m = machine()
    write_docs_section("pets_speed", f"### PETS at the paper's settings against a batched matmul\n\n"
                       f"`python -m benchmarks.pets_speed` on {m['cpu']}, {m['date']}, torch {m['torch']}, 1 thread, "
                       f"thread CPU time, medians of {args.repeats} alternating repeats.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
