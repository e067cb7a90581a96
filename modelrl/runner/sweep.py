"""``modelrl sweep``: grid and random search over config fields and seeds, on Ray Tune.

Every trial is one ``modelrl train`` run (``runner.train.train``) with one setting and one seed,
written to ``<sweep>/trials/<setting>/seed<S>/``. Ray runs the trials in parallel on this
machine by default (``ray.init()`` starts a local Ray), or on a running Ray cluster given its
address (``auto`` or ``<head-ip>:6379`` on a cluster node, ``ray://head:10001`` through Ray
Client). Each trial reports its final evaluation and its ``metrics.csv`` and ``config.yaml``
back to the driver, so the table (``sweep.csv``) and the plot (``sweep.png``, one line per setting with a band over
seeds) are gathered on the machine that started the sweep even when the trials ran elsewhere.

Ray is an optional dependency: ``pip install 'modelrl[ray]'``.
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

# TrainConfig fields a sweep may vary; algo, env, steps and seed have their own options
_LOOP_FIELDS = ("eval_every", "eval_episodes", "checkpoint_every", "buffer_capacity", "action_repeat")


class SweepError(ValueError):
    """A sweep specification that cannot run (unknown field, bad value, Ray missing)."""


def require_ray():
    """Import Ray Tune, or explain how to install it."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise SweepError("modelrl sweep runs on Ray Tune, which is an optional extra: "
                         "pip install 'modelrl[ray]' (or pip install 'ray[tune]')") from err
    return ray, tune


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["horizon=10,20", "planner=cem,mppi"]`` -> ``{"horizon": [10, 20], "planner": ["cem", "mppi"]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, values = _split(item, "--grid", "FIELD=V1,V2,...")
        parsed = [_value(v) for v in values.split(",") if v.strip() != ""]
        if not parsed:
            raise SweepError(f"--grid {item!r} has no values")
        grid[name] = parsed
    return grid


def parse_random(items: Sequence[str]) -> dict[str, tuple[float, float, bool]]:
    """``["model_lr=1e-4:1e-2:log", "horizon=5:30"]`` -> ``{field: (low, high, log)}``.

    Integer bounds draw integers (``tune.randint``, high inclusive); ``:log`` draws log-uniformly.
    """
    space: dict[str, tuple[float, float, bool]] = {}
    for item in items:
        name, spec = _split(item, "--random", "FIELD=LOW:HIGH[:log]")
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise SweepError(f"--random takes FIELD=LOW:HIGH or FIELD=LOW:HIGH:log, got {item!r}")
        low, high = (_value(p) for p in parts[:2])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise SweepError(f"--random {item!r}: LOW and HIGH must be numbers with LOW < HIGH")
        if log and low <= 0:
            raise SweepError(f"--random {item!r}: a log-uniform range needs LOW > 0")
        space[name] = (low, high, log)
    return space


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> a list of seeds."""
    try:
        if "-" in text.strip()[1:]:
            lo, hi = text.split("-", 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise SweepError(f"--seeds takes a list like 0,1,2 or a range like 0-4, got {text!r}") from err
    if not seeds:
        raise SweepError("--seeds is empty")
    return seeds


def _value(text: str) -> Any:
    """A command-line value as YAML reads it, with ``1e-3`` read as a float (YAML 1.1 wants ``1.0e-3``)."""
    value = yaml.safe_load(text.strip())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _split(item: str, flag: str, form: str) -> tuple[str, str]:
    if "=" not in item:
        raise SweepError(f"{flag} takes {form}, got {item!r}")
    name, value = item.split("=", 1)
    return name.strip().replace("-", "_"), value.strip()


@dataclasses.dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    """One per trial: the varied fields, seed, final eval_return, eval_return_std, env_step, wall_s, run_dir."""
    summary: list[dict[str, Any]]
    """One per setting: the varied fields, seeds, mean and std over seeds of the final eval_return."""
    varied: list[str]
    table: Path
    plot: Path | None


def _check_fields(algo: str, preset: str | None, names: Sequence[str]) -> None:
    """Every swept name is a field of the algorithm's config or of the loop; else list the valid ones."""
    from modelrl.agents import agent_classes, build_config

    config_cls, _ = agent_classes(algo)
    build_config(config_cls, preset)  # an unknown preset lists the valid ones
    agent_fields = {f.name for f in dataclasses.fields(config_cls)}
    valid = sorted(agent_fields | set(_LOOP_FIELDS))
    for name in names:
        if name in ("seed", "env", "steps", "algo"):
            raise SweepError(f"{name!r} has its own option (--seeds, --env, --steps, ALGO), not --grid/--random")
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"Unknown field {name!r}{hint} for {algo}. Valid fields: {', '.join(valid)}.")


def _setting_name(values: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items())]
    return (",".join(parts) or "default").replace("/", "_").replace(" ", "")


def _varied(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's field values: the grid's, plus the drawn random ones (without the seed)."""
    out = {k: v for k, v in config.items() if k not in ("seed", "random")}
    out.update(config.get("random") or {})
    return out


def draw_random(space: dict[str, tuple[float, float, bool]], samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """``samples`` draws of the random fields: integers for integer bounds (high inclusive), else floats."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        point: dict[str, Any] = {}
        for name, (low, high, log) in space.items():
            if isinstance(low, int) and isinstance(high, int) and not log:
                point[name] = int(rng.integers(low, high + 1))
            elif log:
                point[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            else:
                point[name] = float(rng.uniform(low, high))
        draws.append(point)
    return draws


def _trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """One Ray Tune trial: a full training run, then one report with its final evaluation and files."""
    from ray import tune

    from modelrl.runner.train import TrainConfig, train

    seed = int(config["seed"])
    varied = _varied(config)
    values = {**base["fixed"], **varied}
    loop = {k: v for k, v in values.items() if k in _LOOP_FIELDS}
    agent = {k: v for k, v in values.items() if k not in _LOOP_FIELDS}
    cfg = TrainConfig(algo=base["algo"], env=base["env"], steps=base["steps"], seed=seed, preset=base["preset"],
                      eval_every=base["eval_every"], eval_episodes=base["eval_episodes"], **loop)
    run_dir = Path(base["sweep_dir"]) / "trials" / _setting_name(varied) / f"seed{seed}"
    _, run_dir = train(cfg, overrides=agent, out=run_dir, progress=False)
    with open(run_dir / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    tune.report({"eval_return": float(last["eval_return"]), "eval_return_std": float(last["eval_return_std"]),
                 "env_step": int(float(last["env_step"])), "wall_s": float(last["wall_s"]),
                 "run_dir": str(run_dir), "metrics_csv": (run_dir / "metrics.csv").read_text(),
                 "config_yaml": (run_dir / "config.yaml").read_text()})


def run_sweep(
    algo: str,
    env: str,
    steps: int,
    grid: dict[str, list[Any]] | None = None,
    random: dict[str, tuple[float, float, bool]] | None = None,
    fixed: dict[str, Any] | None = None,
    seeds: Sequence[int] = (0,),
    samples: int = 1,
    preset: str | None = None,
    eval_every: int = 1000,
    eval_episodes: int = 10,
    out: str | Path | None = None,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    num_cpus: int | None = None,
    search_seed: int = 0,
    verbose: int = 0,
) -> SweepResult:
    """Train ``algo`` on every grid point (times ``samples`` random draws) and seed; gather a table and a plot.

    ``fixed`` sets fields for every trial without varying them (``--set``).
    """
    grid, random, fixed = dict(grid or {}), dict(random or {}), dict(fixed or {})
    names = [*grid, *random, *fixed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"field(s) {', '.join(repeated)} given more than once across --grid, --random and --set")
    _check_fields(algo, preset, names)
    from modelrl.agents import agent_classes, build_config
    from modelrl.envs import make_env

    config_cls, _ = agent_classes(algo)
    fixed_agent = {k: v for k, v in fixed.items() if k not in _LOOP_FIELDS}
    from modelrl.runner.train import check_train_config

    loop = {"algo": algo, "env": env, "steps": steps, "preset": preset, "eval_every": eval_every,
            "eval_episodes": eval_episodes, **{k: v for k, v in fixed.items() if k in _LOOP_FIELDS}}
    build_config(config_cls, preset, **fixed_agent)
    check_train_config(loop)
    for name, values in grid.items():  # a value the config rejects fails now, not in every trial
        for v in values:
            if name in _LOOP_FIELDS:
                check_train_config({**loop, name: v})
            else:
                build_config(config_cls, preset, **{**fixed_agent, name: v})
    make_env(env).close()  # an unknown env id lists close matches now
    if steps < 1 or samples < 1 or cpus_per_trial <= 0:
        raise SweepError("steps and samples must be >= 1 and cpus_per_trial > 0")
    ray, tune = require_ray()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_dir = Path(out or Path("runs") / "sweeps" / f"{algo}-{env.replace(':', '_')}-{stamp}").absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    spec = {"algo": algo, "env": env, "steps": steps, "preset": preset, "eval_every": eval_every,
            "eval_episodes": eval_episodes, "grid": grid, "set": fixed,
            "random": {k: list(v) for k, v in random.items()}, "seeds": list(seeds), "samples": samples,
            "search_seed": search_seed, "address": address, "cpus_per_trial": cpus_per_trial}
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    space: dict[str, Any] = {name: tune.grid_search(values) for name, values in grid.items()}
    if random:  # drawn here, so every seed of a drawn setting trains with the same values
        space["random"] = tune.grid_search(draw_random(random, samples, search_seed))
    space["seed"] = tune.grid_search(list(seeds))
    base = {"algo": algo, "env": env, "steps": steps, "preset": preset, "eval_every": eval_every,
            "eval_episodes": eval_episodes, "sweep_dir": str(sweep_dir), "fixed": fixed}

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        if address:  # an existing cluster brings its own resources and dashboard
            try:
                ray.init(address=address)
            except (ConnectionError, ConnectionAbortedError) as err:
                raise SweepError(
                    f"could not connect to the Ray cluster at {address}: {err}. A cluster started by `ray start` "
                    f"uses token authentication (Ray >= 2.5x): run with RAY_AUTH_MODE=token and the cluster's "
                    f"token in ~/.ray/auth_token or RAY_AUTH_TOKEN (see docs/cli.md)") from err
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=verbose > 0)
    try:
        trainable = tune.with_resources(tune.with_parameters(_trial, base=base), {"cpu": cpus_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric="eval_return", mode="max", reuse_actors=True,
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir / "ray"), verbose=verbose,
                                      failure_config=tune.FailureConfig(fail_fast=False)))
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()

    errors = [f"{_varied(r.config)}, seed {r.config.get('seed')}: {r.error}" for r in results if r.error is not None]
    rows = []
    varied = [*grid, *random]
    for r in results:
        if r.error is not None or not r.metrics or "eval_return" not in r.metrics:
            continue
        m, values, seed = r.metrics, _varied(r.config), r.config["seed"]
        run_dir = Path(m["run_dir"])
        if not (run_dir / "metrics.csv").exists():  # the trial ran on another node: keep its curve here
            run_dir = sweep_dir / "trials" / _setting_name(values) / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.csv").write_text(m["metrics_csv"])
            (run_dir / "config.yaml").write_text(m["config_yaml"])
        rows.append({**{k: values[k] for k in varied}, "seed": seed, "eval_return": m["eval_return"],
                     "eval_return_std": m["eval_return_std"], "env_step": m["env_step"], "wall_s": m["wall_s"],
                     "run_dir": str(run_dir)})
    if not rows:
        raise RuntimeError("every trial failed:\n" + "\n".join(errors[:3]))
    rows.sort(key=lambda row: (tuple(_sort_key(row[k]) for k in varied), row["seed"]))
    table = sweep_dir / "sweep.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, varied)
    (sweep_dir / "summary.json").write_text(json.dumps({"summary": summary, "failed_trials": errors}, indent=2))
    from modelrl.runner.plots import plot_runs

    plot = plot_runs([row["run_dir"] for row in rows], sweep_dir / "sweep.png",
                     title=f"sweep: {algo} on {env}, {steps} steps")
    return SweepResult(sweep_dir, rows, summary, varied, table, plot)


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order, then everything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def summarize(rows: list[dict[str, Any]], varied: Sequence[str]) -> list[dict[str, Any]]:
    """One row per setting: its field values, seeds, mean and std of the final eval return; best first."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[k]) for k in varied), []).append(row)
    out = []
    for members in groups.values():
        returns = [float(m["eval_return"]) for m in members]
        out.append({**{k: members[0][k] for k in varied}, "seeds": len(members),
                    "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
                    "min_return": float(np.min(returns)), "max_return": float(np.max(returns))})
    out.sort(key=lambda s: -s["mean_return"] if math.isfinite(s["mean_return"]) else math.inf)
    return out
