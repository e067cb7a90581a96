"""One timing of one ``modelrl`` code tree, printed as JSON: the child process of ``benchmarks.baseline_speed``.

    PYTHONPATH=TREE python benchmarks/_speed_probe.py CASE [--lockstep] [--eager] [--repeats R] [--episodes K]

Run by path, never as ``-m benchmarks...``: it imports nothing but ``modelrl`` (from ``PYTHONPATH``),
numpy and torch, and only calls that the code of 2026-11-26 (before issue 16) and today's both
have (``make``, ``make_env``, ``ReplayBuffer``, ``act(obs, True)``, ``update(buffer, step)``), so the same
file times the old tree and the new one.

Cases:
- ``tdmpc-step``: TD-MPC ``cpu`` preset on DMC cartpole-swingup shapes (action repeat 8), after 1,000
  random transitions; medians of thread CPU time of one training ``act`` (a plan) and one ``update``
  at the full planning horizon, after warm-up calls (compilation is reported apart).
- ``eval-mpc-v1.5``, ``eval-tdmpc-cpu``, ``eval-pets-cpu``: K evaluation episodes of an agent made ready
  as ``benchmarks.eval_speed`` does (MPC: 1,000 random transitions and one fit; TD-MPC: its initial
  networks at the full horizon); process CPU time of the K episodes, one after another (the loop of
  the old ``runner.train.evaluate``) or, with ``--lockstep``, today's ``evaluate(..., lockstep=True)``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

EVAL_CASES = {  # case: (algo, preset, env, action repeat); benchmarks.eval_speed runs the same cases
    "eval-mpc-v1.5": ("mpc", "v1.5", "Pendulum-v1", 1),
    "eval-tdmpc-cpu": ("tdmpc", "cpu", "dmc:cartpole-swingup", 8),
    "eval-pets-cpu": ("mpc", "pets-cpu", "Pendulum-v1", 1),
}


def random_buffer(agent, env, n: int):
    from modelrl.data.buffer import ReplayBuffer

    buf = ReplayBuffer(agent.obs_dim, agent.action_dim, 10_000, seed=0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(n):
        a = rng.uniform(-1, 1, agent.action_dim).astype(np.float32)
        nobs, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nobs, te, tr)
        obs = nobs if not (te or tr) else env.reset()[0]
    return buf


def build(algo: str, preset: str, env_id: str, repeat: int, eager: bool, **overrides):
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env(env_id, seed=0, action_repeat=repeat)
    if eager:
        overrides["compile"] = False
    return make(algo, env, preset=preset, seed=0, **overrides), env


def tdmpc_step(repeats: int, eager: bool) -> dict:
    agent, env = build("tdmpc", "cpu", "dmc:cartpole-swingup", 8, eager, pretrain_updates=1)
    buf = random_buffer(agent, env, 1000)
    step = agent.config.schedule_steps  # full horizon, std floor at its end value
    obs, _ = env.reset(seed=1)
    t = time.perf_counter()
    agent.update(buf, step)
    agent.act(obs)
    first = time.perf_counter() - t  # wall-clock: compilation runs partly in worker processes
    for _ in range(3):
        agent.update(buf, step)
        agent.act(obs)
    plan, update = [], []
    for i in range(repeats):
        t = time.thread_time()
        agent.act(obs)
        plan.append(time.thread_time() - t)
        t = time.thread_time()
        agent.update(buf, step + i)
        update.append(time.thread_time() - t)
    env.close()
    return {"plan_ms": 1e3 * statistics.median(plan), "update_ms": 1e3 * statistics.median(update),
            "first_wall_s": first, "compile": bool(getattr(agent.config, "compile", False))}


def evaluation(case: str, episodes: int, lockstep: bool, eager: bool) -> dict:
    from modelrl.envs import make_env

    algo, preset, env_id, repeat = EVAL_CASES[case]
    agent, env = build(algo, preset, env_id, repeat, eager)
    if algo == "mpc":  # fit the model once on random data, as after the seed phase
        agent.update(random_buffer(agent, env, 1000), max(agent.config.explore_steps, 1000))
    else:
        agent.step = agent.config.schedule_steps  # full planning horizon
    env.close()
    seeds = [10_000 + i for i in range(episodes)]  # the old evaluate's reset seeds at seed 0
    envs = [make_env(env_id, seed=0, action_repeat=repeat) for _ in range(episodes if lockstep else 1)]
    if lockstep:
        from modelrl.runner.evaluate import run_episodes

        warm = np.stack([e.reset(seed=s)[0] for e, s in zip(envs, seeds)])
        for _ in range(2):  # compilation of the batched plan, outside the timing
            agent.act_batch(warm, deterministic=True)
        agent.reset()
        c, w = time.process_time(), time.perf_counter()
        returns = run_episodes(agent, envs, seeds, lockstep=True)[0]
    else:
        agent.act(envs[0].reset(seed=seeds[0])[0], True)
        agent.reset()
        c, w = time.process_time(), time.perf_counter()
        returns = []
        for s in seeds:  # the loop of the old runner.train.evaluate
            obs, _ = envs[0].reset(seed=s)
            agent.reset()
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = envs[0].step(agent.act(obs, True))
                total += float(r)
                done = term or trunc
            returns.append(total)
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    for e in envs:
        e.close()
    return {"cpu_s": cpu, "wall_s": wall, "mean_return": float(np.mean(returns)), "episodes": episodes,
            "lockstep": lockstep, "compile": bool(getattr(agent.config, "compile", False))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("case", choices=["tdmpc-step", *EVAL_CASES])
    p.add_argument("--lockstep", action="store_true")
    p.add_argument("--eager", action="store_true", help="compile=False where the tree has the option")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--episodes", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = tdmpc_step(a.repeats, a.eager) if a.case == "tdmpc-step" else evaluation(a.case, a.episodes, a.lockstep,
                                                                                    a.eager)
    print("PROBE " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
