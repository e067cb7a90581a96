"""Learning curves of the MPC agent (PETS, v1.5) beside Stable-Baselines3 SAC, same machine, same run.

    python -m benchmarks.mpc_learning                       # every part, seeds 0 1 2
    python -m benchmarks.mpc_learning --parts pendulum-pets pendulum-sac --seeds 0
    python -m benchmarks.mpc_learning --from-run pendulum-pets 1 runs/pets-seed1   # record a finished run

``--from-run PART SEED DIR`` stores the curve of a ``modelrl train`` run directory made elsewhere
(for instance several seeds started side by side) after checking that its env, steps, evaluation
and resolved agent config are exactly the part's.

Each (part, seed) result is merged into ``benchmarks/results/mpc_learning.json`` as it finishes, so
the parts can be run in pieces; the table in ``docs/benchmarks.md`` is rebuilt from all stored
results. Wall-clock per 1,000 steps leaves out evaluation time (``train_wall_s``) on both sides.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, machine, md_table, save_results, write_docs_section
from modelrl.runner.evaluate import eval_reset_seed


@dataclasses.dataclass
class Part:
    env: str
    steps: int
    eval_every: int
    threshold: float
    """The return that counts as solved (first evaluation at or above it is reported)."""
    preset: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    algo: str = "mpc"  # "sb3-sac": Stable-Baselines3's SAC with its defaults
    note: str = ""


PARTS: dict[str, Part] = {
    # Acceptance: PETS at >= -200 within 1,000 steps; v1.5 (deterministic MLP) within 2,000.
    # Pendulum settings (ours, measured; docs/training.md): horizon 25, because at 15 CEM and MPPI stick
    # below the top from some starts even on the true model (CEM 200/20/3 on seed 1's evaluation starts:
    # 2 of 20 stuck at horizon 15, none at 25), and model batches of 32, so the small early data sets
    # get 8x more gradient steps per epoch (pets-cpu seed 1 at horizon 25: -226 with 256, -199 with 32).
    "pendulum-pets": Part("Pendulum-v1", 1000, 1000, -200.0, preset="pets-cpu",
                          overrides={"horizon": 25, "model_batch_size": 32}),  # a 10-episode evaluation: ~7 min
    "pendulum-v1.5": Part("Pendulum-v1", 2000, 400, -200.0, preset="v1.5",
                          overrides={"horizon": 25, "model_batch_size": 32}),
    "pendulum-sac": Part("Pendulum-v1", 5000, 1000, -200.0, algo="sb3-sac"),
    # Solved: 90% of the true-model MPPI return with the same horizon (157.7, docs/benchmarks.md).
    "cartpole-v1.5": Part("CartPoleSwingUp-v0", 2000, 400, 142.0, preset="v1.5", overrides={"horizon": 30}),
    # v1.5 rather than PETS: an evaluation here is 10 episodes of up to 1,000 steps (2,000 s with pets-cpu).
    "inverted-v1.5": Part("InvertedPendulum-v5", 3000, 1000, 1000.0, preset="v1.5"),
}


def run_modelrl(part: Part, seed: int, eval_episodes: int) -> dict:
    from modelrl.runner.train import TrainConfig, train

    cfg = TrainConfig(algo=part.algo, env=part.env, steps=part.steps, seed=seed, preset=part.preset,
                      eval_every=part.eval_every, eval_episodes=eval_episodes)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, overrides=dict(part.overrides), out=Path(tmp) / "run", progress=False)
        rows = _read_csv(Path(tmp) / "run" / "metrics.csv")
    return {"env_step": [int(r["env_step"]) for r in rows], "eval_return": [float(r["eval_return"]) for r in rows],
            "eval_return_std": [float(r["eval_return_std"]) for r in rows],
            "train_wall_s": [float(r["train_wall_s"]) for r in rows],
            "train_cpu_s": [float(r["train_cpu_s"]) for r in rows]}


def run_sb3_sac(part: Part, seed: int, eval_episodes: int) -> dict:
    """SB3 SAC with its defaults on the plain Gymnasium env; evaluation on the same reset seeds as ours."""
    import gymnasium
    from stable_baselines3 import SAC

    env = gymnasium.make(part.env)
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    eval_env = gymnasium.make(part.env)
    out: dict[str, list[float]] = {"env_step": [], "eval_return": [], "eval_return_std": [], "train_wall_s": []}
    trained, wall = 0, 0.0
    while trained < part.steps:
        chunk = min(part.eval_every, part.steps - trained)
        t = time.perf_counter()
        model.learn(chunk, reset_num_timesteps=trained == 0)
        wall += time.perf_counter() - t
        trained += chunk
        returns = []
        for i in range(eval_episodes):  # the seeds modelrl.runner.train.evaluate uses
            obs, _ = eval_env.reset(seed=eval_reset_seed(seed, i))
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, r, term, trunc, _ = eval_env.step(action)
                total += float(r)
                done = term or trunc
            returns.append(total)
        for key, value in (("env_step", trained), ("eval_return", float(np.mean(returns))),
                           ("eval_return_std", float(np.std(returns))), ("train_wall_s", wall)):
            out[key].append(value)
    return out


def resolved_agent_config(part: Part) -> dict | None:
    """Every agent field the part trains with (defaults < preset < overrides); None for SB3."""
    if part.algo == "sb3-sac":
        return None
    from modelrl.agents import agent_classes
    from modelrl.agents.base import build_config

    return dataclasses.asdict(build_config(agent_classes(part.algo)[0], part.preset, **part.overrides))


def curve_from_run(part: Part, seed: int, run: Path, eval_episodes: int) -> dict:
    """The curve of a finished run directory, refused unless it is exactly (part, seed)."""
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    train = saved["train"]
    want = {"algo": part.algo, "env": part.env, "steps": part.steps, "seed": seed, "eval_every": part.eval_every,
            "eval_episodes": eval_episodes}
    wrong = {k: (train.get(k), v) for k, v in want.items() if train.get(k) != v}
    expected = resolved_agent_config(part)
    wrong.update({k: (saved["agent"].get(k), v) for k, v in (expected or {}).items()  # None: SB3's (algo differs)
                  if k in saved["agent"] and saved["agent"][k] != v})
    if wrong:
        raise SystemExit(f"{run} is not part {part.env}/{part.preset} seed {seed}: " +
                         ", ".join(f"{k} is {got!r}, the part has {exp!r}" for k, (got, exp) in wrong.items()))
    rows = _read_csv(run / "metrics.csv")
    if not rows or int(rows[-1]["env_step"]) != part.steps:
        raise SystemExit(f"{run} has not finished ({rows[-1]['env_step'] if rows else 0} of {part.steps} steps)")
    return {"env_step": [int(r["env_step"]) for r in rows], "eval_return": [float(r["eval_return"]) for r in rows],
            "eval_return_std": [float(r["eval_return_std"]) for r in rows],
            "train_wall_s": [float(r["train_wall_s"]) for r in rows], "total_s": float(rows[-1]["wall_s"]),
            "train_cpu_s": [float(r["train_cpu_s"]) for r in rows] if "train_cpu_s" in rows[0] else None,
            "run": str(run)}


def _read_csv(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def first_step_at(curve: dict, threshold: float) -> int | None:
    for step, ret in zip(curve["env_step"], curve["eval_return"]):
        if ret >= threshold:
            return step
    return None


def summarise(name: str, part: Part, seeds: dict[str, dict]) -> list:
    curves = [seeds[k] for k in sorted(seeds, key=int)]
    final = [c["eval_return"][-1] for c in curves]
    best = [max(c["eval_return"]) for c in curves]
    reached = [first_step_at(c, part.threshold) for c in curves]
    per_k = [1000 * c["train_wall_s"][-1] / c["env_step"][-1] for c in curves]
    cpu = [c.get("train_cpu_s") for c in curves]  # indexed below only when every run has it
    cpu_per_k = (f"{np.mean([1000 * x[-1] / c['env_step'][-1] for x, c in zip(cpu, curves)]):.1f}"  # type: ignore[index]
                 if all(cpu) else "-")
    label = part.preset or part.algo
    if part.overrides:
        label += " (" + ", ".join(f"{k}={v}" for k, v in part.overrides.items()) + ")"
    return [name, part.env, label, len(curves), f"{part.threshold:g}",
            ", ".join("-" if r is None else str(r) for r in reached),
            f"{np.mean(final):.1f} ± {np.std(final):.1f} at {curves[0]['env_step'][-1]}",
            f"{np.mean(best):.1f}", f"{np.mean(per_k):.1f}", cpu_per_k]


def write_docs(results: dict) -> None:
    rows = [summarise(name, PARTS[name], entry["seeds"]) for name, entry in results["parts"].items()
            if name in PARTS and entry["seeds"]]
    curve_rows = []
    for name, entry in results["parts"].items():
        for seed, c in sorted(entry["seeds"].items()):
            pts = ", ".join(f"{s}: {r:.0f}" for s, r in zip(c["env_step"], c["eval_return"]))
            curve_rows.append([name, seed, pts])
    text = (
        "### Model-based RL with MPC: `python -m benchmarks.mpc_learning`\n\n"
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, 1 torch thread. "
        "Evaluation: mean of 10 episodes on fixed reset seeds. s / 1k steps (wall-clock) and CPU s / 1k "
        "steps (process CPU time, where the run recorded it) leave out evaluation. "
        "While these ran, other jobs shared the two cores, so the wall-clock figures are inflated "
        "on both sides alike (the PETS and SAC runs interleave).\n\n"
        + md_table(["part", "env", "config", "seeds", "solved at", "first step reaching it (per seed)",
                    "final eval return", "best eval (mean)", "s / 1k steps", "CPU s / 1k steps"], rows)
        + "\n\nCurves (env step: mean eval return):\n\n" + md_table(["part", "seed", "curve"], curve_rows))
    write_docs_section("mpc_learning", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--from-run", nargs=3, action="append", metavar=("PART", "SEED", "DIR"), default=[],
                        help="record a finished run directory as (part, seed) instead of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = RESULTS / "mpc_learning.json"
    results = json.loads(path.read_text()) if path.exists() else {"parts": {}}
    results["machine"] = machine()
    if args.from_run:
        for name, seed, run in args.from_run:
            if name not in PARTS:
                raise SystemExit(f"unknown part {name!r}; parts: {', '.join(PARTS)}")
            curve = curve_from_run(PARTS[name], int(seed), Path(run), args.eval_episodes)
            entry = results["parts"].setdefault(name, {"config": dataclasses.asdict(PARTS[name]), "seeds": {}})
            agent = resolved_agent_config(PARTS[name])
            if entry["config"] != dataclasses.asdict(PARTS[name]) or entry.get("agent") != agent:
                # the part or its preset changed since the stored seeds ran: they no longer count
                entry.update(config=dataclasses.asdict(PARTS[name]), agent=agent, seeds={})
            entry["seeds"][str(seed)] = curve
            print(f"{name} seed {seed}: " + ", ".join(f"{s}: {r:.1f}" for s, r in
                                                     zip(curve["env_step"], curve["eval_return"])))
        save_results("mpc_learning", results)
        write_docs(results)
        return
    for seed in args.seeds:  # seeds outermost, so the parts of one seed run side by side in time
        for name in args.parts:
            part = PARTS[name]
            t = time.perf_counter()
            curve = (run_sb3_sac if part.algo == "sb3-sac" else run_modelrl)(part, seed, args.eval_episodes)
            curve["total_s"] = time.perf_counter() - t
            if path.exists():  # other processes may have added parts or seeds meanwhile: merge, do not overwrite
                results["parts"] = json.loads(path.read_text())["parts"]
            entry = results["parts"].setdefault(name, {"config": dataclasses.asdict(part), "seeds": {}})
            if entry["config"] != dataclasses.asdict(part) or entry.get("agent") != resolved_agent_config(part):
                entry.update(config=dataclasses.asdict(part), agent=resolved_agent_config(part), seeds={})
            entry["seeds"][str(seed)] = curve
            save_results("mpc_learning", results)
            write_docs(results)
            print(f"{name} seed {seed}: " + ", ".join(f"{s}: {r:.1f}" for s, r in
                                                     zip(curve["env_step"], curve["eval_return"]))
                  + f"  ({curve['total_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
