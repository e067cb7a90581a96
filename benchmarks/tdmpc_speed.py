"""TD-MPC speed: ms per planning call and per TOLD update, planning GFLOP/s against a plain matmul, buffer memory.

    python -m benchmarks.tdmpc_speed [--repeats 5] [--quick]

One thread, float32, shapes of DMC cartpole-swingup (5 observations, 1 action). Planning is timed
at the full horizon (5, as after the horizon schedule). FLOPs are counted from the dense layers
(2 x multiply-adds). The matmul reference is measured in the same run: the shape of planning's
dominant layer ([N + N_pi, m] x [m, m]) and a square 1024 matmul. Times are medians over repeats,
in wall-clock and in thread CPU time (the latter is what a busy shared machine distorts least);
GFLOP/s ratios compare like with like. The 100k-step wall-clock of cartpole-swingup is
estimated from the measured per-step costs (official protocol: action repeat 8, evaluation of
10 episodes every 10k env steps). A replay buffer of 1M transitions plus its sub-trajectory
sampler is filled in a child process whose peak RSS is reported.
Writes benchmarks/results/tdmpc_speed.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from benchmarks.common import load_results, machine, md_table, save_results, write_docs_section

CARTPOLE_STEPS, REPEAT, EPISODE = 100_000, 8, 125  # env steps, official action repeat, agent steps per episode
EVAL_EVERY, EVAL_EPISODES = 10_000, 10  # official eval_freq and eval_episodes


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, thread CPU) seconds of ``fn()`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(wall), statistics.median(cpu)


def planning_flops(agent) -> float:
    """FLOPs of one planning call at the full horizon (dense layers)."""
    c, f = agent.config, agent.model.flops_per_step()
    h, n_pi = c.horizon, int(c.mixture_coef * c.num_samples)
    rows = c.num_samples + n_pi
    per_iteration = rows * (h * f["next"] + f["pi"] + f["q"])
    return n_pi * h * (f["pi"] + f["next"]) + c.iterations * per_iteration


def make_agent(preset: str):
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=REPEAT)
    return make("tdmpc", env, preset=preset, seed=0, device="cpu", compile=False), env  # eager (--compile: both)


def filled_buffer(agent, env, n: int):
    from modelrl.data.buffer import ReplayBuffer

    buf = ReplayBuffer(agent.obs_dim, agent.action_dim, 100_000, seed=0)
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        a = env.action_space.sample()
        nobs, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nobs, te, tr)
        obs = nobs if not (te or tr) else env.reset()[0]
    return buf


def measure(preset: str, repeats: int) -> dict:
    agent, env = make_agent(preset)
    c = agent.config
    buf = filled_buffer(agent, env, 1000)
    agent.config.pretrain_updates = 1
    agent.update(buf, c.explore_steps)
    agent.step = c.schedule_steps  # full planning horizon
    obs, _ = env.reset(seed=1)
    plan_wall, plan_cpu = timed(lambda: agent.act(obs), repeats)
    upd_wall, upd_cpu = timed(lambda: agent._update_once(buf), repeats)
    env_wall, env_cpu = timed(lambda: env.step(env.action_space.sample()), 3 * repeats)
    flops = planning_flops(agent)
    rows = c.num_samples + int(c.mixture_coef * c.num_samples)
    a, b = torch.randn(rows, c.mlp_dim), torch.randn(c.mlp_dim, c.mlp_dim)
    mm_wall, mm_cpu = timed(lambda: a @ b, 10 * repeats)
    mm_flops = 2 * rows * c.mlp_dim * c.mlp_dim
    sq = torch.randn(1024, 1024)
    sq_wall, sq_cpu = timed(lambda: sq @ sq, 3 * repeats)
    sq_flops = 2 * 1024**3
    # 100k env steps of cartpole-swingup: agent steps, updates, planning calls (training and evaluation)
    agent_steps = CARTPOLE_STEPS // REPEAT
    updates = agent_steps * c.updates_per_step
    train_plans = agent_steps - c.explore_steps
    eval_plans = (CARTPOLE_STEPS // EVAL_EVERY) * EVAL_EPISODES * EPISODE
    env_calls = agent_steps + eval_plans

    def estimate(plan, upd, env_step):
        return (updates * upd + (train_plans + eval_plans) * plan + env_calls * env_step) / 60

    return {
        "preset": preset, "mlp_dim": c.mlp_dim, "num_samples": c.num_samples, "iterations": c.iterations,
        "batch_size": c.batch_size, "horizon": c.horizon,
        "plan_ms": 1e3 * plan_wall, "plan_cpu_ms": 1e3 * plan_cpu, "update_ms": 1e3 * upd_wall,
        "update_cpu_ms": 1e3 * upd_cpu, "env_step_ms": 1e3 * env_wall, "env_step_cpu_ms": 1e3 * env_cpu,
        "plan_gflop": flops / 1e9, "plan_gflops": flops / plan_wall / 1e9, "plan_gflops_cpu": flops / plan_cpu / 1e9,
        "matmul_shape": [rows, c.mlp_dim, c.mlp_dim], "matmul_gflops": mm_flops / mm_wall / 1e9,
        "matmul_gflops_cpu": mm_flops / mm_cpu / 1e9, "matmul1024_gflops": sq_flops / sq_wall / 1e9,
        "matmul1024_gflops_cpu": sq_flops / sq_cpu / 1e9,
        "plan_vs_matmul": (flops / plan_wall) / (mm_flops / mm_wall),
        "plan_vs_matmul_cpu": (flops / plan_cpu) / (mm_flops / mm_cpu),
        "cartpole_100k": {"agent_steps": agent_steps, "updates": updates, "train_plans": train_plans,
                          "eval_plans": eval_plans, "estimate_min": estimate(plan_wall, upd_wall, env_wall),
                          "estimate_cpu_min": estimate(plan_cpu, upd_cpu, env_cpu)},
    }


def compiled_vs_eager(preset: str, repeats: int) -> dict:
    """TD-MPC ``compile=True`` against the eager agent, same seed, same process, alternating: thread CPU
    medians per plan and per update, and the compilation (first update and first plan) apart."""
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=REPEAT)
    agents, compile_s = {}, {}
    for comp in (False, True):
        agent: Any = make("tdmpc", env, preset=preset, seed=0, device="cpu", compile=comp,  # a TDMPCAgent
                          pretrain_updates=1)
        buf = filled_buffer(agent, env, 1000)
        t = time.perf_counter()
        agent.update(buf, agent.config.explore_steps)  # the first update compiles the losses
        agent.step = agent.config.schedule_steps
        obs, _ = env.reset(seed=1)
        agent.act(obs)  # the first plan compiles the latent rollout
        compile_s[comp] = time.perf_counter() - t
        agents[comp] = (agent, buf, obs)
    plan: dict[bool, list[float]] = {False: [], True: []}
    upd: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for comp, (agent, buf, obs) in agents.items():
            plan[comp].append(timed(functools.partial(agent.act, obs), 1)[1])
            upd[comp].append(timed(functools.partial(agent._update_once, buf), 1)[1])
    p_e, p_c = statistics.median(plan[False]), statistics.median(plan[True])
    u_e, u_c = statistics.median(upd[False]), statistics.median(upd[True])
    return {"preset": preset, "plan_cpu_ms": 1e3 * p_e, "plan_cpu_ms_compiled": 1e3 * p_c,
            "update_cpu_ms": 1e3 * u_e, "update_cpu_ms_compiled": 1e3 * u_c,
            "step_ratio": (p_c + u_c) / (p_e + u_e), "compile_s": compile_s[True] - compile_s[False]}


MEMORY_CHILD = r"""
import json, resource, sys, numpy as np
from modelrl.data.buffer import ReplayBuffer
from modelrl.data.subtraj import SubTrajectorySampler
obs_dim, act_dim, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
buf = ReplayBuffer(obs_dim, act_dim, n, seed=0)
rng = np.random.default_rng(0)
chunk = 100_000
for s in range(0, n, chunk):  # fill in place, as 1000-step episodes would (add() one by one takes minutes)
    e = min(n, s + chunk)
    buf.obs[s:e] = rng.standard_normal((e - s, obs_dim), dtype=np.float32)
    buf.next_obs[s:e] = rng.standard_normal((e - s, obs_dim), dtype=np.float32)
    buf.action[s:e] = rng.uniform(-1, 1, (e - s, act_dim)).astype(np.float32)
    buf.reward[s:e] = rng.random(e - s, dtype=np.float32)
    buf.episode_start[s:e] = np.arange(s, e) % 1000 == 0
    buf.truncated[s:e] = np.arange(s, e) % 1000 == 999
buf.size, buf.pos, buf.total = n, 0, n
sampler = SubTrajectorySampler(n, 5, prioritized=True, seed=0)
batch = sampler.sample(buf, 512)
sampler.update_priorities(batch["idx"], rng.random(512))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024, "valid_starts": sampler.num_valid,
                  "buffer_mib": sum(getattr(buf, k).nbytes for k in buf._ARRAYS) / 2**20,
                  "sampler_mib": (sampler.valid.nbytes + sampler.priority.nbytes + sampler.ep_index.nbytes
                                  + sampler.tree.tree.nbytes) / 2**20}))
"""


def memory(obs_dim: int, act_dim: int, n: int = 1_000_000) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(obs_dim), str(act_dim), str(n)],
                         capture_output=True, text=True, check=True)
    return {"obs_dim": obs_dim, "action_dim": act_dim, "transitions": n, **json.loads(out.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repeats, cpu preset only, no write")
    parser.add_argument("--compile", action="store_true",
                        help="only the compiled-against-eager table (TD-MPC compile=True), both presets")
    args = parser.parse_args()
    if args.compile:
        torch.set_num_threads(1)
        compiled = [compiled_vs_eager(p, 3 if p == "paper" else args.repeats * 4) for p in ("cpu", "paper")]
        data = load_results("tdmpc_speed")
        data["compile"] = {"machine": machine(), "rows": compiled}
        save_results("tdmpc_speed", data)
        m = data["compile"]["machine"]
        table = md_table(["preset", "ms / plan: eager, compiled", "ms / update: eager, compiled",
                          "plan + update, compiled / eager", "compilation, s (first update + plan)"],
                         [[r["preset"], f"{r['plan_cpu_ms']:.1f}, {r['plan_cpu_ms_compiled']:.1f}",
                           f"{r['update_cpu_ms']:.1f}, {r['update_cpu_ms_compiled']:.1f}", f"{r['step_ratio']:.2f}x",
                           f"{r['compile_s']:.0f}"] for r in compiled])
        text = ("### TD-MPC compiled (`compile=True`) against eager\n\n`python -m benchmarks.tdmpc_speed --compile` "
                f"on {m['cpu']}, {m['date']}, torch {m['torch']}, 1 thread, cartpole-swingup shapes, planning at "
                f"horizon 5; thread CPU time, medians, the two agents alternating in one process.\n\n{table}\n")
        write_docs_section("tdmpc_compile", text)
        print(text)
        return
    torch.set_num_threads(1)
    presets = ["cpu"] if args.quick else ["paper", "cpu"]
    results = [measure(p, 2 if args.quick else args.repeats) for p in presets]
    mem = [memory(5, 1), memory(67, 21)] if not args.quick else [memory(5, 1, 100_000)]
    for r in results:
        print(json.dumps(r))
    for m in mem:
        print(json.dumps(m))
    if args.quick:
        return
    data = {"machine": machine(), "results": results, "memory": mem}
    save_results("tdmpc_speed", data)
    m = data["machine"]
    rows = [[r["preset"], f"{r['mlp_dim']} / {r['num_samples']} / {r['iterations']} / {r['batch_size']}",
             f"{r['plan_ms']:.1f} ({r['plan_cpu_ms']:.1f})", f"{r['update_ms']:.1f} ({r['update_cpu_ms']:.1f})",
             f"{r['plan_gflop']:.2f}", f"{r['plan_gflops']:.1f} ({r['plan_gflops_cpu']:.1f})",
             f"{r['matmul_gflops']:.1f} ({r['matmul_gflops_cpu']:.1f})",
             f"{100 * r['plan_vs_matmul']:.0f}% ({100 * r['plan_vs_matmul_cpu']:.0f}%)",
             f"{r['cartpole_100k']['estimate_min']:.0f} ({r['cartpole_100k']['estimate_cpu_min']:.0f})"]
            for r in results]
    mem_rows = [[f"{x['transitions']:,}", x["obs_dim"], x["action_dim"], f"{x['buffer_mib']:.0f}",
                 f"{x['sampler_mib']:.0f}", f"{x['peak_rss_mib']:.0f}"] for x in mem]
    text = (f"### TD-MPC speed\n\n`python -m benchmarks.tdmpc_speed` on {m['cpu']}, {m['date']}, torch {m['torch']}, "
            f"1 thread, cartpole-swingup shapes, planning at horizon 5. Wall-clock medians; thread CPU time in "
            f"parentheses (what other processes on a shared machine distort least). Matmul: "
            f"[N + N_pi, m] x [m, m] in the same run.\n\n"
            + md_table(["preset", "m / N / J / batch", "ms / plan", "ms / update", "GFLOP / plan",
                        "plan GFLOP/s", "matmul GFLOP/s", "plan / matmul", "100k cartpole, min (est.)"], rows)
            + "\n\nThe 100k-step estimate: 12,500 agent steps (action repeat 8), one update each, a planning call "
              "per step after the seed steps and per evaluation step (10 episodes every 10k env steps), plus "
              "the simulator.\n\nReplay buffer (float32 obs, next obs, action, reward; bool flags) with its "
              "prioritised sub-trajectory sampler, filled and sampled in a fresh process:\n\n"
            + md_table(["transitions", "obs", "action", "buffer MiB", "sampler MiB", "peak RSS MiB"], mem_rows))
    write_docs_section("tdmpc_speed", text)
    print(text)


if __name__ == "__main__":
    main()
