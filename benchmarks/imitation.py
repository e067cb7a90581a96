"""Imitation benchmark: DAgger and behaviour cloning students of the true-model MPPI teacher.

    python -m benchmarks.imitation [--envs Pendulum-v1 CartPoleSwingUp-v0] [--seeds 0 1 2] [--quick]

For each env and seed: the expert (``--expert mppi``: MPPI on the true model with the env's
preset) is evaluated; DAgger and BC are trained through the common run loop with the same
label budget (BC: the expert's own trajectories; DAgger: the learner's, labelled by the
expert); every policy is evaluated on the same 10 episodes (``evaluate``: reset seeds
10000 + 1000 * seed + i), timing each action. One thread. Writes
benchmarks/results/imitation.json and the imitation section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, md_table, save_results, write_docs_section
from modelrl.agents import agent_classes, build_config
from modelrl.envs import make_env
from modelrl.runner.evaluate import eval_reset_seed
from modelrl.runner.experts import resolve_expert
from modelrl.runner.train import TrainConfig, evaluate, train

# Per env: the label budget of both students, and settings over the defaults (the same for BC and DAgger).
SETUPS: dict[str, dict[str, Any]] = {
    # the "multimodal" preset of dagger (and of bc): see docs/imitation.md, "Which expert to imitate"
    "Pendulum-v1": {"labels": 5000, "student": {"policy": "mixture", "label_every": 4, "round_episodes": 4}},
    "CartPoleSwingUp-v0": {"labels": 3000, "student": {}},  # the defaults (Ross et al.'s DAgger)
}


def steps_for(algo: str, env_id: str, labels: int, student: dict) -> int:
    """Env steps that spend exactly ``labels``: BC labels every step; DAgger (beta_1 = 1, then 0)
    labels every step of round 1 and every ``label_every``-th step after it."""
    if algo == "bc":
        return labels
    c: Any = build_config(agent_classes("dagger")[0], None, **student)  # a DAgger config
    env = make_env(env_id)
    horizon = env.spec.max_episode_steps  # type: ignore[union-attr]  # a registered env has a spec
    env.close()
    first = min(labels, c.round_episodes * horizon if c.round_steps == 0 else c.round_steps)
    return first + (labels - first) * c.label_every
EPISODES = 10


class Timed:
    """Wraps anything with ``act``/``reset`` and times each action."""

    def __init__(self, act, reset) -> None:
        self._act, self._reset, self.seconds, self.calls = act, reset, 0.0, 0

    def act(self, obs, deterministic: bool = False):
        t0 = time.perf_counter()
        a = self._act(obs)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return a

    def reset(self) -> None:
        self._reset()

    @property
    def ms(self) -> float:
        return 1000.0 * self.seconds / max(self.calls, 1)


def run_expert(env_id: str, seed: int, episodes: int) -> dict:
    expert = resolve_expert("mppi", env_id, seed=seed)
    assert expert is not None  # "mppi" names one
    timed = Timed(expert.label, expert.reset)
    returns = evaluate(timed, env_id, episodes, seed)
    return {"returns": returns, "mean": float(np.mean(returns)), "ms_per_action": timed.ms}


def run_student(algo: str, env_id: str, seed: int, labels: int, student: dict, episodes: int, root: Path) -> dict:
    t0 = time.perf_counter()
    steps = steps_for(algo, env_id, labels, student)
    cfg = TrainConfig(algo, env_id, steps=steps, seed=seed, eval_every=steps, eval_episodes=episodes)
    agent, run_dir = train(cfg, overrides={"expert": "mppi", "label_budget": labels, **student},
                           out=root / algo / env_id / str(seed), progress=False)
    train_s = time.perf_counter() - t0
    timed = Timed(lambda o: agent.act(o, deterministic=True), agent.reset)
    returns = evaluate(timed, env_id, episodes, seed)
    return {"returns": returns, "mean": float(np.mean(returns)), "ms_per_action": timed.ms,
            "labels": agent.labels_paid, "env_steps": steps, "train_s": train_s,
            "expert_ms_per_label": 1000.0 * agent.expert_seconds / max(agent.labels_paid, 1)}


def paired_timing(env_id: str, student: dict, seed: int = 0, steps: int = 200, blocks: int = 3) -> dict:
    """Median ms per action of the expert and of a student of the benchmark's architecture on the
    same observations, in alternating blocks (the expert drives an episode, timed per label; then
    the student answers the same observations, timed per call), so both see the same machine load.
    A student's time does not depend on its weights, so an untrained one of the same shape is timed."""
    from modelrl.agents import make

    env = make_env(env_id, seed=seed)
    expert = resolve_expert("mppi", env_id, seed=seed)
    assert expert is not None  # "mppi" names one
    agent = make("dagger", env, seed=seed, **student)
    t_expert, t_student = [], []
    for b in range(blocks):
        obs, _ = env.reset(seed=eval_reset_seed(seed, b))
        expert.reset()
        seen = []
        for _ in range(steps):
            seen.append(obs)
            t0 = time.perf_counter()
            a = expert.label(obs)
            t_expert.append(time.perf_counter() - t0)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        for o in seen:
            t0 = time.perf_counter()
            agent.act(o, deterministic=True)
            t_student.append(time.perf_counter() - t0)
    env.close()
    e, s = 1000 * float(np.median(t_expert)), 1000 * float(np.median(t_student))
    return {"expert_ms": e, "student_ms": s, "speedup": e / s, "steps": len(t_expert)}


def gap(student: float, expert: float) -> float:
    """How far below the expert, in % of |expert return| (<= 5: within 5% of the expert)."""
    return 100.0 * (expert - student) / abs(expert)


def bench_env(env_id: str, seeds: list[int], labels: int, student: dict, episodes: int) -> dict:
    out: dict[str, Any] = {"labels": labels, "student": student, "seeds": seeds, "expert": [], "dagger": [], "bc": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            out["expert"].append(run_expert(env_id, seed, episodes))
            for algo in ("dagger", "bc"):
                out[algo].append(run_student(algo, env_id, seed, labels, student, episodes, Path(tmp)))
            e = out["expert"][-1]["mean"]
            print(f"{env_id} seed {seed}: expert {e:.1f}, dagger {out['dagger'][-1]['mean']:.1f}, "
                  f"bc {out['bc'][-1]['mean']:.1f}", flush=True)
    for algo in ("dagger", "bc"):
        for s, e in zip(out[algo], out["expert"]):
            s["gap_pct"] = gap(s["mean"], e["mean"])
    return out


def table(env_id: str, res: dict) -> str:
    timing = res.get("timing")
    rows = []
    for name in ("expert", "dagger", "bc"):
        runs = res[name]
        means = [r["mean"] for r in runs]
        per_seed = ", ".join(f"{m:.1f}" for m in means)
        if name == "expert":
            ms = f"{timing['expert_ms']:.2f}" if timing else "-"
            rows.append(["MPPI expert (true model)", "-", "-", f"{np.mean(means):.1f}", per_seed, "-", "-", ms, "1x"])
        else:
            gaps = [r["gap_pct"] for r in runs]
            within = sum(g <= 5.0 for g in gaps)
            ms = f"{timing['student_ms']:.3f}" if timing else "-"
            rows.append([f"{name} student", str(runs[0]["labels"]), str(runs[0]["env_steps"]),
                         f"{np.mean(means):.1f}", per_seed, ", ".join(f"{g:+.1f}" for g in gaps),
                         f"{within} of {len(gaps)}", ms, f"{timing['speedup']:.0f}x" if timing else "-"])
    return md_table(["policy", "expert labels", "env steps", "mean return", "per seed",
                     "gap to expert % (per seed)", "seeds within 5%", "ms / action (median)", "speed-up"], rows)


def docs_text(results: dict) -> str:
    m = results["machine"]
    text = [f"### Imitation: DAgger and BC students of the MPPI expert\n\n`python -m benchmarks.imitation` on "
            f"{m['cpu']}, {m['date']}, torch {m['torch']}, 1 thread. The expert is MPPI on the true model "
            f"(`--expert mppi`: on Pendulum-v1 horizon 20, planned from scratch for each label with 3 iterations; "
            f"on the cart-pole the `modelrl plan` preset, warm-started); both students get the same number of "
            f"expert labels through the common run loop (`modelrl train dagger|bc --label-budget N`); every "
            f"policy is evaluated on the same {results['episodes']} episodes per seed (reset seeds "
            f"10000 + 1000 seed + i). Gap to expert: (expert - student) / |expert| per seed (negative: better "
            f"than the expert). Time per action: median over 3 episodes, the expert driving and timed per label, "
            f"then the student timed on the same observations, block by block (the machine was shared; the ratio "
            f"is what carries over); "
            f"speed-up: expert ms / student ms."]
    for env_id, res in results["envs"].items():
        student = ", ".join(f"{k}={v}" for k, v in res["student"].items()) or "the defaults"
        text.append(f"\n{env_id}, seeds {', '.join(map(str, res['seeds']))}, students: {student}:\n\n"
                    f"{table(env_id, res)}")
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--quick", action="store_true", help="one seed, 1000 labels, 2 episodes; prints, saves nothing")
    parser.add_argument("--timing-only", action="store_true",
                        help="redo only the paired expert/student timing of the envs in the results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"machine": machine(), "episodes": args.episodes, "envs": {}}
    if args.timing_only:
        results = json.loads((RESULTS / "imitation.json").read_text())
        for env_id in args.envs:
            res = results["envs"][env_id]
            res["timing"] = paired_timing(env_id, res["student"])
            res["timing"]["machine"] = machine()
            print(env_id, res["timing"], flush=True)
        save_results("imitation", results)
        write_docs_section("imitation", docs_text(results))
        return
    for env_id in args.envs:
        setup = SETUPS[env_id]
        labels, seeds, episodes = setup["labels"], args.seeds, args.episodes
        if args.quick:
            labels, seeds, episodes = 1000, seeds[:1], 2
        results["envs"][env_id] = bench_env(env_id, seeds, labels, setup["student"], episodes)
        results["envs"][env_id]["timing"] = paired_timing(env_id, setup["student"])
        if args.quick:
            continue
        results["envs"][env_id]["machine"] = machine()
        previous = RESULTS / "imitation.json"  # envs run separately (e.g. in parallel) share one file
        saved = json.loads(previous.read_text()).get("envs", {}) if previous.exists() else {}
        merged = {**saved, **results["envs"]}
        results["envs"] = {k: merged[k] for k in SETUPS if k in merged}
        save_results("imitation", results)
    if args.quick:
        print(table(env_id, results["envs"][env_id]))
        return
    print(f"wrote {RESULTS / 'imitation.json'}")
    write_docs_section("imitation", docs_text(results))
    print("updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
