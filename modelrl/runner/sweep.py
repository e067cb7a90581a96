"""``modelrl sweep``: grid and random search over config fields and seeds, on Ray Tune.

Every trial is one ``modelrl train`` run (``runner.train.train``) with one setting and one seed. Ray runs the
trials in parallel on this machine by default (``ray.init()`` starts a local Ray), or on a running Ray cluster given
its address (``auto`` or ``<head-ip>:6379`` on a cluster node, ``ray://head:10001`` through Ray Client).

A trial trains in a staging folder on the node that runs it and hands its whole run directory to Ray Tune at every
checkpoint; Tune copies it to the sweep's storage (``--storage``: a path every node sees, or a URI such as
``s3://bucket/path``; default the sweep directory), so every trial's run directory, checkpoints included, ends up in
one place: ``<storage>/tune/trial_<id>/checkpoint_<n>/``, linked (or, from a URI, copied) to
``<sweep>/trials/<setting>/seed<S>/``. An interrupted sweep continues with ``--resume`` on Tune's own experiment
restore: finished trials are kept, unfinished ones resume from their last checkpoint (modelrl's exact resume).
The table (``sweep.csv``), ``summary.json`` and the plot (``sweep.png``, one line per setting with a band over seeds)
account for every trial the sweep asks for; an incomplete sweep says so (``complete: false``).

Ray is an optional dependency: ``pip install 'modelrl[ray]'``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelrl.runner.options import read_value, split_assignment
from modelrl.runner.rundir import LOCK_NAME
from modelrl.types import suggestions

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
        parsed = [read_value(v) for v in values.split(",") if v.strip() != ""]
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
        low, high = (read_value(p) for p in parts[:2])
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


def _split(item: str, flag: str, form: str) -> tuple[str, str]:
    try:
        return split_assignment(item, flag, form)
    except ValueError as err:
        raise SweepError(str(err)) from None


@dataclasses.dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    """One per trial: the varied fields, seed, status, final eval_return, eval_return_std, env_step, wall_s, run_dir
    (relative to the sweep directory); a trial without a result has its status and empty results."""
    summary: list[dict[str, Any]]
    """One per setting: the varied fields, seeds, mean and std over seeds of the final eval_return."""
    varied: list[str]
    table: Path
    plot: Path | None
    complete: bool = True
    """Every trial the sweep asks for finished."""
    failed: list[str] = dataclasses.field(default_factory=list)
    missing: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The trials without a result: field values, seed, status (failed, unfinished, not started)."""


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
            close = suggestions(name, valid, n=1, cutoff=0.5)
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


def trial_settings(config: dict[str, Any], base: dict[str, Any]):
    """A trial's ``TrainConfig`` and agent overrides from its Tune config (grid values, random draws, seed) and the
    sweep's fixed settings; a swept loop field (``eval_every``, ...) replaces the sweep's own value."""
    from modelrl.runner.train import TrainConfig

    values = {**base["fixed"], **_varied(config)}
    loop = {"algo": base["algo"], "env": base["env"], "steps": base["steps"], "seed": int(config["seed"]),
            "preset": base["preset"], "eval_every": base["eval_every"], "eval_episodes": base["eval_episodes"]}
    loop.update({k: v for k, v in values.items() if k in _LOOP_FIELDS})
    agent = {k: v for k, v in values.items() if k not in _LOOP_FIELDS}
    return TrainConfig(**loop), agent


def _trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """One Ray Tune trial: a training run in a staging folder on the node that runs it. Every modelrl checkpoint
    reports the run directory (``_snapshot``) to Tune as a Tune checkpoint, which Tune copies to the sweep's storage; a
    restored sweep hands the last one back (``tune.get_checkpoint``) and the run resumes from it exactly. The
    final report (``finished``) carries the finished run directory, plots included."""
    import shutil
    import tempfile

    import ray
    from ray import tune

    from modelrl.runner.train import train

    cfg, agent = trial_settings(config, base)
    staging = Path(tempfile.mkdtemp(prefix="modelrl-trial-"))
    run_dir = staging / "run"

    def report(step: int, finished: bool) -> None:
        last = _last_row(run_dir / "metrics.csv")
        snapshot = _snapshot(run_dir, staging / "report")
        try:
            tune.report({"finished": finished, "env_step": step, "node": ray.get_runtime_context().get_node_id(),
                         **{k: float(last[k]) if last else math.nan
                            for k in ("eval_return", "eval_return_std", "wall_s")}},
                        checkpoint=tune.Checkpoint.from_directory(str(snapshot)))
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def on_checkpoint(step: int) -> None:
        if step < cfg.steps:  # the last one is reported below, with the learning curve
            report(step, False)

    try:
        restored = tune.get_checkpoint() or _stored_checkpoint(base["storage"], tune.get_context().get_trial_id())
        if restored is None:
            train(cfg, overrides=agent, out=run_dir, progress=False, on_checkpoint=on_checkpoint)
        else:
            restored.to_directory(str(run_dir))
            last = _last_row(run_dir / "metrics.csv")
            if last is not None and int(float(last["env_step"])) >= cfg.steps:
                # the run had finished (only the final report carries the last step) when the sweep stopped
                # before Tune marked the trial done: hand the same run directory back, nothing retrained
                report(cfg.steps, True)
                return
            train(cfg, resume=run_dir, progress=False, on_checkpoint=on_checkpoint)
        report(cfg.steps, True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _snapshot(run_dir: Path, dest: Path) -> Path:
    """The run directory as Tune should store it, in ``dest``: hard links to its files (no copy; the files are
    replaced by atomic renames, so a link keeps the version it saw), without ``latest.prev.pt`` (a second copy of
    the replay buffer, only a fallback on this disk) and the lock. Copies where links are impossible."""
    import shutil

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run_dir, dest, copy_function=link,
                    ignore=shutil.ignore_patterns("latest.prev.pt", LOCK_NAME, "*.tmp"))
    return dest


def _stored_checkpoint(storage: str, trial_id: str):
    """The newest run directory this trial left in the storage, for a trial Tune restarts without a checkpoint: a
    checkpoint the trial wrote just before a Ctrl-C reaches the storage but not Tune's experiment state, and Tune
    would otherwise start the trial again from scratch."""
    import pyarrow.fs as pafs
    from ray import tune

    if _is_uri(storage):
        fs, root = pafs.FileSystem.from_uri(storage)
    else:
        fs, root = pafs.LocalFileSystem(), storage
    trial_dir = f"{root.rstrip('/')}/tune/trial_{trial_id}"
    found = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    for info in sorted((i for i in found if i.base_name.startswith("checkpoint_")), key=lambda i: i.base_name,
                       reverse=True):
        files = fs.get_file_info([f"{info.path}/config.yaml", f"{info.path}/checkpoints/latest.pt"])
        if all(f.type == pafs.FileType.File for f in files):
            return tune.Checkpoint(info.path, filesystem=fs)
    return None


def _last_row(metrics_csv: Path) -> dict[str, str] | None:
    if not metrics_csv.exists():
        return None
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _plain(text: str) -> str:
    """An error text without terminal colour codes (Ray colours its tracebacks)."""
    return _ANSI.sub("", text)


def _is_uri(storage: str) -> bool:
    return "://" in storage


def check_storage_visible(ray, storage: str) -> None:
    """Every node of the cluster sees the local storage path (a shared file system), else stop before any trial
    runs: Tune writes every trial's run directory there, and a node that cannot see it fails its trials."""
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(storage) / f".modelrl-storage-check-{uuid.uuid4().hex}"
    marker.write_text("")
    try:
        probe = ray.remote(num_cpus=0)(os.path.exists)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(marker)) for n in nodes])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, seen) if not ok]
    if blind:
        raise SweepError(
            f"the sweep's storage {storage} is not visible from the cluster node(s) {', '.join(blind)}: every trial's "
            f"run directory (checkpoints, metrics, plots, TensorBoard logs) is written to the storage from the node "
            f"that runs it, so it must be shared by every node. Pass --storage on a shared file system (NFS) or a "
            f"URI Ray can write (s3://bucket/path, gs://bucket/path)")


def _expected_trials(spec: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """Every (field values, seed) the sweep's specification asks for, in grid order."""
    import itertools

    grid = spec["grid"]
    draws = draw_random({k: tuple(v) for k, v in spec["random"].items()}, spec["samples"], spec["search_seed"]) \
        if spec["random"] else [{}]
    out = []
    for combo in itertools.product(*grid.values()):
        for draw in draws:
            for seed in spec["seeds"]:
                out.append(({**dict(zip(grid, combo)), **draw}, int(seed)))
    return out


def _materialize(checkpoint, dest: Path, local_storage: bool) -> None:
    """Make ``dest`` the trial's finished run directory: a relative link to it in local storage, else a download."""
    import shutil

    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():  # a stale copy (an older run of this trial) never mixes with the new files
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local_storage:
        dest.symlink_to(os.path.relpath(checkpoint.path, dest.parent), target_is_directory=True)
    else:
        checkpoint.to_directory(str(dest))


def run_sweep(
    algo: str | None = None,
    env: str = "Pendulum-v1",
    steps: int = 10_000,
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
    storage: str | None = None,
    resume: str | Path | None = None,
    retry_failed: bool = False,
    on_start: Any = None,
) -> SweepResult:
    """Train ``algo`` on every grid point (times ``samples`` random draws) and seed; gather a table and a plot.

    ``fixed`` sets fields for every trial without varying them (``--set``). ``storage`` is where Ray Tune keeps
    every trial's run directory: a path (default ``<sweep>/``, shared by every node on a cluster) or a URI
    (``s3://...``). ``resume`` continues the sweep in that directory with its own specification (``sweep.yaml``):
    finished trials are kept, unfinished ones continue from their last checkpoint, failed ones rerun from theirs
    with ``retry_failed``. ``on_start(message)`` receives one line saying where the run directories go.
    """
    if resume is not None:
        sweep_dir = Path(resume).absolute()
        if not (sweep_dir / "sweep.yaml").is_file():
            raise SweepError(f"{sweep_dir} is not a sweep directory (no sweep.yaml): nothing to resume")
        spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
        if address is not None:  # the cluster may have moved; everything else is the sweep's own
            spec["address"] = address
    else:
        if algo is None:
            raise SweepError("give the algorithm to sweep (modelrl sweep ALGO ...), or --resume SWEEP_DIR")
        spec = _new_sweep(algo, env, steps, dict(grid or {}), dict(random or {}), dict(fixed or {}), list(seeds),
                          samples, preset, eval_every, eval_episodes, address, cpus_per_trial, search_seed)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        sweep_dir = Path(out or Path("runs") / "sweeps" / f"{algo}-{env.replace(':', '_')}-{stamp}").absolute()
        if (sweep_dir / "sweep.yaml").exists():
            raise SweepError(f"{sweep_dir} already holds a sweep: continue it with --resume {sweep_dir}, "
                             f"or give another --out")
        spec["storage"] = storage or str(sweep_dir)
    ray, tune = require_ray()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = spec.get("storage") or str(sweep_dir)
    local_storage = not _is_uri(storage)
    if local_storage:
        storage = str(Path(storage).absolute())
        Path(storage).mkdir(parents=True, exist_ok=True)
    spec["storage"] = storage
    if resume is None:
        (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    space: dict[str, Any] = {name: tune.grid_search(values) for name, values in spec["grid"].items()}
    if spec["random"]:  # drawn here, so every seed of a drawn setting trains with the same values
        space["random"] = tune.grid_search(draw_random({k: tuple(v) for k, v in spec["random"].items()},
                                                       spec["samples"], spec["search_seed"]))
    space["seed"] = tune.grid_search(list(spec["seeds"]))
    base = {k: spec[k] for k in ("algo", "env", "steps", "preset", "eval_every", "eval_episodes", "storage")}
    base["fixed"] = spec["set"]

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # one experiment-state snapshot per trial checkpoint is what num_to_keep=1 asks for, not a problem
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        if spec["address"]:  # an existing cluster brings its own resources and dashboard
            try:
                ray.init(address=spec["address"])
            except (ConnectionError, ConnectionAbortedError) as err:
                raise SweepError(
                    f"could not connect to the Ray cluster at {spec['address']}: {err}. A cluster started by `ray "
                    f"start` uses token authentication (Ray >= 2.5x): run with RAY_AUTH_MODE=token and the "
                    f"cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN (see docs/cli.md)") from err
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=verbose > 0)
    try:
        if local_storage and spec["address"]:
            check_storage_visible(ray, storage)
        if on_start is not None:
            on_start(f"every trial's run directory goes to the sweep storage {storage}/tune/ (Tune copies it there "
                     f"at each checkpoint, from whichever node runs the trial); {sweep_dir}/trials/ "
                     + ("links to them" if local_storage else "gets a copy of each finished one"))
        trainable = tune.with_resources(tune.with_parameters(_trial, base=base), {"cpu": spec["cpus_per_trial"]})
        if resume is not None:
            if not tune.Tuner.can_restore(_join(storage, "tune")):
                raise SweepError(f"{sweep_dir}: no Ray Tune state at {_join(storage, 'tune')} to resume (the sweep "
                                 f"stopped before its first trial started); start it again with another --out")
            tuner = tune.Tuner.restore(_join(storage, "tune"), trainable, resume_unfinished=True,
                                       resume_errored=retry_failed, restart_errored=False)
        else:
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(reuse_actors=True,
                                            trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
                run_config=tune.RunConfig(
                    name="tune", storage_path=storage, verbose=verbose,
                    failure_config=tune.FailureConfig(fail_fast=False),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    return _gather(results, spec, sweep_dir, local_storage)


def _join(storage: str, name: str) -> str:
    return storage.rstrip("/") + "/" + name


def _new_sweep(algo, env, steps, grid, random, fixed, seeds, samples, preset, eval_every, eval_episodes, address,
               cpus_per_trial, search_seed) -> dict[str, Any]:
    """Check a new sweep's specification (every value the trials will use) and return it as ``sweep.yaml`` holds it."""
    names = [*grid, *random, *fixed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"field(s) {', '.join(repeated)} given more than once across --grid, --random and --set")
    _check_fields(algo, preset, names)
    from modelrl.agents import agent_classes, build_config
    from modelrl.envs import make_env
    from modelrl.runner.train import check_train_config

    config_cls, _ = agent_classes(algo)
    fixed_agent = {k: v for k, v in fixed.items() if k not in _LOOP_FIELDS}
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
    return {"algo": algo, "env": env, "steps": steps, "preset": preset, "eval_every": eval_every,
            "eval_episodes": eval_episodes, "grid": grid, "set": fixed,
            "random": {k: list(v) for k, v in random.items()}, "seeds": seeds, "samples": samples,
            "search_seed": search_seed, "address": address, "cpus_per_trial": cpus_per_trial}


def _gather(results, spec: dict[str, Any], sweep_dir: Path, local_storage: bool) -> SweepResult:
    """The table, summary and plot from Tune's results; every trial the specification asks for is accounted for:
    finished (a row and its run directory under ``<sweep>/trials/``), failed, or not finished."""
    varied = [*spec["grid"], *spec["random"]]
    found: dict[tuple[str, int], Any] = {}
    for r in results:
        if r.config:  # a trial that never started has no config in Tune's results
            found[(_setting_name(_varied(r.config)), int(r.config["seed"]))] = r
    rows, failed, missing = [], [], []
    for values, seed in _expected_trials(spec):
        name = _setting_name(values)
        r = found.get((name, seed))
        m = (r.metrics or {}) if r is not None else {}
        if r is not None and r.error is None and m.get("finished") and r.checkpoint is not None:
            run_dir = sweep_dir / "trials" / name / f"seed{seed}"
            _materialize(r.checkpoint, run_dir, local_storage)
            rows.append({**{k: values[k] for k in varied}, "seed": seed, "status": "finished",
                         "eval_return": m["eval_return"], "eval_return_std": m["eval_return_std"],
                         "env_step": m["env_step"], "wall_s": m["wall_s"], "node": m.get("node", ""),
                         "run_dir": os.path.relpath(run_dir, sweep_dir)})
            continue
        where = {**{k: values[k] for k in varied}, "seed": seed}
        if r is not None and r.error is not None:
            error = _plain(str(r.error)).strip().splitlines()
            failed.append(f"{values}, seed {seed}: {error[-1] if error else 'failed'}")
            status = "failed"
        else:
            status = "unfinished" if m.get("env_step") else "not started"
        missing.append({**where, "status": status, "env_step": m.get("env_step", 0)})
        rows.append({**where, "status": status, "eval_return": "", "eval_return_std": "",
                     "env_step": m.get("env_step", 0), "wall_s": "", "node": m.get("node", ""), "run_dir": ""})
    done = [row for row in rows if row["status"] == "finished"]
    rows.sort(key=lambda row: (tuple(_sort_key(row[k]) for k in varied), row["seed"]))
    table = sweep_dir / "sweep.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(done, varied, seeds=len(spec["seeds"]))
    complete = not missing
    (sweep_dir / "summary.json").write_text(json.dumps(
        {"complete": complete, "trials": len(rows), "finished": len(done), "summary": summary,
         "failed_trials": failed, "missing_trials": missing}, indent=2))
    plot = None
    if done:
        from modelrl.runner.plots import plot_runs

        plot = plot_runs([sweep_dir / row["run_dir"] for row in done], sweep_dir / "sweep.png",
                         title=f"sweep: {spec['algo']} on {spec['env']}, {spec['steps']} steps")
    return SweepResult(sweep_dir, rows, summary, varied, table, plot, complete, failed, missing)


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order, then everything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def summarize(rows: list[dict[str, Any]], varied: Sequence[str], seeds: int | None = None) -> list[dict[str, Any]]:
    """One row per setting: its field values, seeds, mean and std of the final eval return; best first.
    ``seeds``: how many each setting should have (``seeds_expected``; fewer when some trials did not finish)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row[k]) for k in varied), []).append(row)
    out = []
    for members in groups.values():
        returns = [float(m["eval_return"]) for m in members]
        out.append({**{k: members[0][k] for k in varied}, "seeds": len(members),
                    **({"seeds_expected": seeds} if seeds is not None else {}),
                    "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
                    "min_return": float(np.min(returns)), "max_return": float(np.max(returns))})
    out.sort(key=lambda s: -s["mean_return"] if math.isfinite(s["mean_return"]) else math.inf)
    return out
