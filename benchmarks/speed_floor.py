"""How far issue 16's CPU speed targets sit above what the arithmetic alone costs on this CPU.

    python -m benchmarks.speed_floor [--repeats 200]
    python -m benchmarks.speed_floor --report    # the docs section from the stored results

For each target it counts the floating-point work of the new code path with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, forward and backward) and divides it by the
fastest single-thread matmul rate measured in the same run (square matmuls from 256 to 1024): the time
the work would take if every matmul ran at that rate and everything else (activations, LayerNorm, the
optimiser, Python) cost nothing. Beside it: the target's time and today's time (one thread, thread or
process CPU time, medians), so that ``floor / target`` says how much of the target the matmuls alone use.

Targets (issue 16): TD-MPC ``cpu`` preset plan + update at most 0.5x the old code's (the old time is read
from ``benchmarks/results/baseline_speed.json``, ``python -m benchmarks.baseline_speed``); SAC's update at
most 0.6x Stable-Baselines3's (measured here, same batch and networks); 10 evaluation episodes 3x faster
than the old code (old times from the same file); and issue 19's TD-MPC2 at 5x the official code's agent
steps per second at the official 1M and 5M model sizes (the official rates as issue 19 measured them).
Writes benchmarks/results/speed_floor.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks._speed_probe import EVAL_CASES, build, evaluation, random_buffer, tdmpc_step
from benchmarks.common import load_results, machine, md_table, save_results, write_docs_section
from benchmarks.tdmpc2_speed import OFFICIAL_STEPS_PER_S
from benchmarks.tdmpc_speed import filled_buffer, timed


def flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def thread_ms(fn, repeats: int) -> float:
    """Median thread CPU time of ``fn()``, ms (``benchmarks.tdmpc_speed.timed``, after 10 warm-up calls)."""
    for _ in range(9):
        fn()
    return 1e3 * timed(fn, repeats)[1]


def peak_gflops() -> float:
    """The fastest of a few square fp32 matmuls on this thread, GFLOP/s."""
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        ms = thread_ms(lambda: torch.mm(a, b), 20 if n == 1024 else 100)  # noqa: B023  # called at once
        best = max(best, 2 * n ** 3 / ms / 1e6)
    return best


def tdmpc_flops() -> tuple[float, float]:
    """FLOPs of one TD-MPC ``cpu`` update and one plan at the full horizon (cartpole-swingup shapes), eager."""
    agent, env = build("tdmpc", "cpu", "dmc:cartpole-swingup", 8, True, pretrain_updates=1)
    buf = random_buffer(agent, env, 1000)
    step = agent.config.schedule_steps
    agent.update(buf, step)
    obs, _ = env.reset(seed=1)
    agent.act(obs)
    return flops(lambda: agent.update(buf, step + 1)), flops(lambda: agent.act(obs))


def eval_plan_flops(case: str) -> tuple[float, int]:
    """FLOPs of one evaluation plan of ``case`` and the plans its 10 episodes make (episode length / repeat)."""
    algo, preset, env_id, repeat = EVAL_CASES[case]
    agent, env = build(algo, preset, env_id, repeat, True)
    if algo == "mpc":
        agent.update(random_buffer(agent, env, 1000), max(agent.config.explore_steps, 1000))
    else:
        agent.step = agent.config.schedule_steps
    obs, _ = env.reset(seed=0)
    agent.act(obs, True)
    per_plan = flops(lambda: agent.act(obs, True))
    steps, done = 0, False  # agent steps of one episode (the env counts steps after its action repeat)
    env.reset(seed=0)
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    return per_plan, 10 * steps


def tdmpc2_step(preset: str) -> tuple[float, float]:
    """FLOPs of one TD-MPC2 plan + update at an official model size (cartpole-swingup shapes, action repeat 2,
    eager) and their thread CPU time, ms (medians of 5; the simulator's step is left out, so the floor is lower)."""
    from modelrl.agents import make
    from modelrl.envs import make_env

    env = make_env("dmc:cartpole-swingup", seed=0, action_repeat=2)
    agent: Any = make("tdmpc2", env, preset=preset, seed=0, device="cpu", compile=False, pretrain_updates=1)
    buf = filled_buffer(agent, env, 1000)
    obs, _ = env.reset(seed=1)
    agent.update(buf, agent.config.explore_steps)
    agent.act(obs)
    work = flops(lambda: agent.act(obs)) + flops(lambda: agent._update_once(buf))
    return work, 1e3 * (timed(lambda: agent.act(obs), 5)[1] + timed(lambda: agent._update_once(buf), 5)[1])


def sac_case(repeats: int) -> dict:
    """Our SAC update and SB3's on Pendulum-v1 (defaults of both: 2 x 256 ReLU, batch 256)."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC

    from modelrl.agents.sac import SACAgent, SACConfig

    env = gym.make("Pendulum-v1")
    ours = SACAgent(env, SACConfig(), seed=0, device="cpu")
    buf = random_buffer(ours, env, 5000)
    sb3 = SB3SAC("MlpPolicy", env, seed=0, device="cpu", verbose=0)
    sb3.learn(300)

    def ours_update():
        ours.update(buf, 10 ** 6)

    def sb3_update():
        sb3.train(gradient_steps=1, batch_size=256)

    ours_ms, sb3_ms = [], []
    for _ in range(3):  # alternating rounds
        ours_ms.append(thread_ms(ours_update, repeats))
        sb3_ms.append(thread_ms(sb3_update, repeats))
    return {"flops": flops(ours_update), "ours_ms": statistics.median(ours_ms), "sb3_ms": statistics.median(sb3_ms)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=200, help="timed SAC updates per round")
    p.add_argument("--report", action="store_true", help="the docs section from benchmarks/results/speed_floor.json")
    args = p.parse_args()
    if not args.report:
        measure(args.repeats)
    report()


def measure(repeats: int) -> None:
    torch.set_num_threads(1)
    base = load_results("baseline_speed")
    if not base:
        raise SystemExit("run `python -m benchmarks.baseline_speed` first: the old code's times come from it")
    peak = peak_gflops()
    out: dict = {"machine": machine(), "peak_gflops": peak, "cases": {}}

    def add(name: str, target_ms: float, now_ms: float, work: float, target: str, **extra) -> None:
        out["cases"][name] = {"target": target, "target_ms": target_ms, "now_ms": now_ms, "gflop": work / 1e9,
                              "floor_ms": work / peak / 1e6, **extra}

    upd, plan = tdmpc_flops()
    old = base["tdmpc_step"]["old"]
    new = tdmpc_step(30, eager=False)
    add("TD-MPC cpu: plan + update, ms", 0.5 * (old["plan_ms"] + old["update_ms"]),
        new["plan_ms"] + new["update_ms"], upd + plan, "0.5x the old code")
    sac = sac_case(repeats)
    add("SAC update, ms", 0.6 * sac["sb3_ms"], sac["ours_ms"], sac["flops"], "0.6x SB3 (measured here)",
        sb3_ms=sac["sb3_ms"])
    for case in ("eval-mpc-v1.5", "eval-tdmpc-cpu"):
        per_plan, plans = eval_plan_flops(case)
        now = evaluation(case, 10, lockstep=True, eager=False)["cpu_s"]
        add(f"{case}: 10 episodes, ms", 1e3 * base["evaluation"][case]["old"]["cpu_s"] / 3, 1e3 * now,
            per_plan * plans, "3x faster than the old code", plans=plans)
    for preset, official in OFFICIAL_STEPS_PER_S.items():  # issue 19: 5x the official rate at the same size
        work, now_ms = tdmpc2_step(preset)
        add(f"TD-MPC2 {preset.upper()}: plan + update, ms", 1e3 / (5 * official), now_ms, work,
            f"5x the official ({official} steps/s; issue 19)")
    save_results("speed_floor", out)


def report() -> None:
    out = load_results("speed_floor")
    m = out["machine"]
    rows = [[name, c["target"], f"{c['target_ms']:.1f}", f"{c['now_ms']:.1f}", f"{c['gflop']:.2f}",
             f"{c['floor_ms']:.1f}", f"{c['floor_ms'] / c['target_ms']:.0%}", f"{c['now_ms'] / c['floor_ms']:.2f}x"]
            for name, c in out["cases"].items()]
    text = (f"### How close the CPU targets are to the arithmetic\n\n`python -m benchmarks.speed_floor` on {m['cpu']}, "
            f"{m['date']}, torch {m['torch']}, 1 thread. Work: matmul FLOPs of the new code path (forward and "
            f"backward, `FlopCounterMode`); floor: that work at the fastest fp32 matmul rate measured in the same "
            f"run ({out['peak_gflops']:.0f} GFLOP/s), with everything else free. Old times: "
            "`benchmarks/results/baseline_speed.json`.\n\n"
            + md_table(["case", "target", "target time", "now", "GFLOP (matmuls)", "floor", "floor / target time",
                        "now / floor"], rows))
    write_docs_section("speed_floor", text)
    print(text)

if __name__ == "__main__":
    main()
