"""The training loop every agent runs in: collect -> update -> evaluate -> log -> checkpoint.

Checkpoints are written at episode boundaries (agent, optimisers, replay buffer, counters, the
env's and the loop's RNG states), so ``resume`` continues exactly as if never stopped: the
metrics of a resumed run equal those of an uninterrupted one with the same seed.

Every config source passes ``check_train_config`` and ``agents.build_config`` (types, NaN, unknown
names) before a directory is made; a NaN or inf at the loop's boundaries (the env's observation or
reward, the agent's action, an update's losses) stops the run with what, where and why.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from modelrl.agents import AgentConfig, agent_classes, build_config
from modelrl.agents.base import RunContext, check_fields, stream_seed
from modelrl.data.buffer import ReplayBuffer
from modelrl.envs import make_env
from modelrl.envs.make import EnvContractError
from modelrl.runner.checkpoint import (
    CheckpointError,
    env_rng_state,
    global_rng_state,
    load_checkpoint,
    previous_checkpoint,
    read_checkpoint,
    save_checkpoint,
    set_env_rng_state,
    set_global_rng_state,
)
from modelrl.runner.evaluate import eval_reset_seed, run_episodes
from modelrl.runner.experts import resolve_expert
from modelrl.runner.rundir import (
    LOCK_NAME,
    DiskFullError,
    MetricsWriter,
    RunDirError,
    RunLock,
    create_run_dir,
    default_run_dir,
    progress_bar,
    read_metrics,
    read_run_config,
    save_config,
)
from modelrl.types import NonFiniteError


@dataclasses.dataclass
class TrainConfig:
    """Settings of the loop itself (the algorithm's live in its own config)."""

    algo: str
    env: str
    steps: int
    """Environment steps to train for; with an action repeat k, an agent step is k environment steps."""
    seed: int = 0
    preset: str | None = None
    eval_every: int = 1000
    """Evaluate at the first episode end at or after every multiple of this many env steps."""
    eval_episodes: int = 10
    checkpoint_every: int | None = None
    """Env steps between checkpoints (at episode ends); default: eval_every."""
    buffer_capacity: int = 1_000_000
    action_repeat: int | None = None
    """None: the algorithm's choice for the env (``AgentConfig.default_action_repeat``; TD-MPC on DeepMind Control:
    the official per-domain value); a new run's config.yaml records the value used."""
    threads: int | None = 1
    """torch threads; 1 is fastest for the small batched ops of planning on a laptop CPU."""
    device: str = "auto"
    """Where the agent's modules, tensors and generators live: auto (CUDA where available), cpu, cuda, cuda:N."""


class TrainingError(RuntimeError):
    """Training stopped on bad data; the message names what went wrong, the env step, the likely cause, and
    whether resuming from the last checkpoint can help."""


def check_train_config(values: TrainConfig | Mapping[str, Any], where: str | None = None) -> TrainConfig:
    """A ``TrainConfig`` from any source (the Python API, flags, a ``--config`` file, a run's config.yaml), checked
    once: field names and types (``agents.base.check_fields``: unknown names with the closest valid one, NaN
    refused, numbers written as text read), then the ranges the loop needs. ``where`` (a file) prefixes errors."""
    if isinstance(values, TrainConfig):
        values = dataclasses.asdict(values)
    checked = check_fields(TrainConfig, values, where)
    prefix = f"{where}: " if where else ""
    missing = [f.name for f in dataclasses.fields(TrainConfig)
               if f.default is dataclasses.MISSING and f.name not in checked]
    if missing:
        raise ValueError(f"{prefix}missing field(s) {', '.join(missing)}")
    cfg = TrainConfig(**checked)
    problems = []
    if cfg.steps < 1:
        problems.append(f"steps must be >= 1, got {cfg.steps}")
    if cfg.eval_every < 1 or cfg.eval_episodes < 1:
        problems.append(f"eval_every and eval_episodes must be >= 1, got {cfg.eval_every} and {cfg.eval_episodes}")
    if cfg.checkpoint_every is not None and cfg.checkpoint_every < 1:
        problems.append(f"checkpoint_every must be >= 1 (or left out: eval_every), got {cfg.checkpoint_every}")
    if not 0 <= cfg.seed < 2**32:
        problems.append(f"seed must be in [0, 2^32), got {cfg.seed}")
    if cfg.buffer_capacity < 1:
        problems.append(f"buffer_capacity must be >= 1, got {cfg.buffer_capacity}")
    for name in ("action_repeat", "threads"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            problems.append(f"{name} must be >= 1 (or left out), got {getattr(cfg, name)}")
    if problems:
        raise ValueError(prefix + "; ".join(problems))
    return cfg


class NonFiniteLoss(NonFiniteError):
    """An update returned a NaN or infinite loss (or other measurement)."""

    def __init__(self, message: str, step: int | None) -> None:
        super().__init__(message, what="loss", step=step)


def evaluate(agent, env_id: str | list, episodes: int, seed: int, action_repeat: int = 1,
             lockstep: bool = True) -> list[float]:
    """Returns of ``episodes`` evaluation episodes (fixed reset seeds, so every evaluation sees the same starts).

    The episodes run in lockstep (``runner.evaluate.run_episodes``). ``env_id`` may be a list of
    ``episodes`` envs made before (the run loop keeps its evaluation envs between evaluations).
    """
    envs = env_id if isinstance(env_id, list) else eval_envs(env_id, episodes if lockstep else 1, seed, action_repeat)
    seeds = [eval_reset_seed(seed, i) for i in range(episodes)]
    if not lockstep or len(envs) < episodes:
        envs = [envs[0]] * episodes
    returns, _, _ = run_episodes(agent, envs[:episodes], seeds, lockstep=lockstep)
    if not isinstance(env_id, list):
        for env in {id(e): e for e in envs}.values():
            env.close()
    return returns


def eval_envs(env_id: str, episodes: int, seed: int, action_repeat: int = 1) -> list:
    """One env per evaluation episode, for lockstep evaluation."""
    return [make_env(env_id, seed=seed, action_repeat=action_repeat) for _ in range(episodes)]


class LossMeter:
    """What ``agent.update`` returns, per logged row: tensors are per-update measurements (losses), averaged
    over the updates since the last row and read from the device once per row (as SB3 logs means);
    plain numbers are state (counters, schedules, cumulative times) and keep their latest value."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, out: dict, step: int | None = None) -> None:
        """One update's output (after env step ``step``). A NaN or inf in a loss (a tensor) raises ``NonFiniteLoss``
        at once where that costs nothing (one-element CPU tensors); other tensors are checked when the row is
        read or a checkpoint written, so a GPU never waits for it."""
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().float()
                if v.device.type == "cpu" and v.numel() == 1 and not math.isfinite(v.item()):
                    raise NonFiniteLoss(f"the agent's {k} is {v.item()} after its update at env step {step}", step)
                self.sums[k] = v if k not in self.sums else self.sums[k] + v
                self.counts[k] = self.counts.get(k, 0) + 1
            else:
                self.last[k] = float(v)

    def non_finite_state(self) -> str:
        """The plain values (model fit statistics, counters) that are NaN or inf, as ``name = value`` text."""
        return ", ".join(f"{k} = {v}" for k, v in self.last.items() if not math.isfinite(v))

    def check(self, step: int | None = None) -> None:
        """Raise ``NonFiniteLoss`` when an update since the last row gave a NaN or inf (it stays in the sum)."""
        for k, v in self.sums.items():
            if not bool(torch.isfinite(v).all()):
                raise NonFiniteLoss(f"the agent's {k} was not finite ({v.mean().item()}) in an update since the last "
                                    f"logged row, at or before env step {step}", step)

    def row(self, step: int | None = None) -> dict[str, float]:
        """The row's values, and a fresh start for the next row."""
        self.check(step)
        out = dict(self.last)
        out.update({k: float(v) / self.counts[k] for k, v in self.sums.items()})
        self.sums, self.counts, self.last = {}, {}, {}
        return out

    def state_dict(self, step: int | None = None) -> dict:
        self.check(step)  # never checkpoint a diverged agent over the last good one
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts),
                "last": dict(self.last)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts, self.last = dict(state["sums"]), dict(state["counts"]), dict(state["last"])


def train(
    cfg: TrainConfig | None,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    device: str | None = None,
    steps: int | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
):
    """Train ``cfg.algo`` on ``cfg.env``; returns (agent, run_dir). ``resume`` continues a run directory
    (``steps`` then extends it to that many env steps: ``config.yaml`` records the new length);
    ``device`` overrides ``cfg.device``; with ``resume`` it moves a run to another device than the one it
    started on (resumes are exact on one device; across devices the random streams restart, see
    ``modelrl.device.load_generator_state``). ``on_checkpoint(step)`` runs after each checkpoint is written
    (a sweep trial hands the run directory to Ray Tune's storage there).

    The run directory is owned: a new run refuses one that already holds files (``--resume`` continues
    a run), and a lock (``runner.rundir.RunLock``) keeps a second process out while this one writes.
    ``cfg`` may be None with ``resume`` (the run's config.yaml has it).
    """
    agent_config = None
    if resume is not None:
        target = Path(resume)
        if not (target / "config.yaml").is_file():
            raise FileNotFoundError(f"{target} is not a run directory (no config.yaml): nothing to resume")
    else:  # every setting checked before a directory is made
        if cfg is None:
            raise TypeError("train: cfg is None, which only a resume (resume=<run dir>) can take")
        cfg = check_train_config(cfg)
        agent_config = build_config(agent_classes(cfg.algo)[0], cfg.preset, cfg.env, **(overrides or {}))
        target = Path(out) if out is not None else default_run_dir(cfg.algo, cfg.env, cfg.seed)
    existed, had_lock = target.exists(), (target / LOCK_NAME).exists()
    try:
        with RunLock(target):
            return _train(cfg, agent_config, target, resume is not None, progress, on_step, device, steps,
                          on_checkpoint)
    except BaseException as err:
        # refused, or failed before writing anything: leave the directory as it was found
        if not (isinstance(err, RunDirError) and "in use" in str(err)) and target.is_dir():
            if not had_lock and (target / LOCK_NAME).exists() and not (target / "config.yaml").exists():
                (target / LOCK_NAME).unlink()
            if not existed and not any(target.iterdir()):
                target.rmdir()
        raise


def _train(cfg: TrainConfig | None, agent_config: AgentConfig | None, target: Path, resuming: bool, progress: bool,
           on_step: Callable[[int], None] | None, device: str | None, steps: int | None,
           on_checkpoint: Callable[[int], None] | None = None):
    """``train`` inside the run directory's lock (``cfg`` and ``agent_config`` checked already for a new run)."""
    resume = target if resuming else None
    if resume is not None:
        run_dir = Path(resume)
        saved = read_run_config(run_dir)
        where = str(run_dir / "config.yaml")
        cfg = check_train_config(saved["train"], where)
        try:  # config.yaml holds every resolved field
            agent_config = build_config(agent_classes(cfg.algo)[0], None, **saved["agent"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        ckpt = _resume_checkpoint(run_dir)
        if ckpt is not None and "env_step" not in ckpt and (cfg.action_repeat or 1) > 1:
            cfg = _count_env_steps(run_dir, saved, cfg, ckpt)  # a run from before the loop counted env steps
        if steps is not None and steps != cfg.steps:  # extend (or shorten, not below the checkpoint) the run
            done = ckpt.get("env_step", ckpt["step"]) if ckpt is not None else 0
            if steps < max(done, 1):
                raise ValueError(f"--steps {steps} is below the {done} env steps {run_dir} has already trained")
            cfg = dataclasses.replace(cfg, steps=steps)
            save_config(run_dir, {**saved, "train": dataclasses.asdict(cfg)})
    else:
        assert cfg is not None and agent_config is not None, "train checks both for a new run"
        run_dir = None
        ckpt = None
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    config_cls, agent_cls = agent_classes(cfg.algo)
    if cfg.action_repeat is None:
        cfg = dataclasses.replace(cfg, action_repeat=config_cls.default_action_repeat(cfg.env))
    action_repeat = cfg.action_repeat
    assert action_repeat is not None
    env = make_env(cfg.env, seed=cfg.seed, action_repeat=action_repeat)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    agent = agent_cls(env, agent_config, seed=cfg.seed, device=cfg.device)
    if ckpt is None:
        warn_if_planning_is_slow(agent, cfg, config_cls)
    buffer = ReplayBuffer(agent.obs_dim, agent.action_dim, cfg.buffer_capacity, seed=cfg.seed)
    meter = LossMeter()
    explore_rng = np.random.default_rng(stream_seed(cfg.seed, "loop.explore"))
    checkpoint_every = cfg.checkpoint_every or cfg.eval_every

    if run_dir is None:
        run_dir = create_run_dir(target, fresh=True)
        # the config as the agent resolved it (MBPO fills per-task values), so a resume or a later
        # reader sees what ran even after a default changes
        save_config(run_dir, {"train": dataclasses.asdict(cfg), "agent": dataclasses.asdict(agent.config)})
    agent.on_run_start(RunContext(run_dir, cfg.algo, resolve_expert))  # e.g. an imitation agent's expert and labels
    # env_step counts environment steps (the unit of --steps, --eval-every, --checkpoint-every and metrics.csv);
    # step counts agent steps (one action, repeated action_repeat times): the agent's own schedules run on it
    step, env_step, episode, next_eval, next_ckpt, wall0 = 0, 0, 0, cfg.eval_every, checkpoint_every, 0.0
    eval_s = 0.0  # wall-clock spent evaluating, so train_wall_s can leave it out
    cpu0, eval_cpu_s = 0.0, 0.0  # process CPU seconds (all threads): a load-independent cost on a shared machine
    obs, _ = env.reset()
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        set_global_rng_state(ckpt["rng"])
        set_env_rng_state(env, ckpt["env_rng"])
        explore_rng.bit_generator.state = ckpt["explore_rng"]
        step, episode, next_eval, next_ckpt, wall0 = (ckpt[k] for k in
                                                      ("step", "episode", "next_eval", "next_ckpt", "wall_s"))
        env_step = ckpt.get("env_step", step)
        eval_s = ckpt.get("eval_s", 0.0)
        cpu0, eval_cpu_s = ckpt.get("cpu_s", 0.0), ckpt.get("eval_cpu_s", 0.0)
        if "losses" in ckpt:
            meter.load_state_dict(ckpt["losses"])
        obs, _ = env.reset()
    metrics = MetricsWriter(run_dir, ["env_step", "agent_step", "wall_s", "train_wall_s", "train_cpu_s", "eval_return",
                                      "eval_return_std", "episode", "train_return"],
                            keep_until=env_step if ckpt is not None else None)
    # drop the events logged after the checkpoint (the resumed loop logs them again); the evaluation at the
    # checkpoint's own step was logged before it was written and is kept
    tb = _tensorboard(run_dir, purge_step=env_step + 1 if ckpt is not None else None)
    t0 = time.perf_counter() - wall0
    c0 = time.process_time() - cpu0

    last_ckpt = env_step if ckpt is not None else None
    envs_for_eval: list[gymnasium.Env] | None = None  # made at the first evaluation, kept for the next ones

    def checkpoint() -> None:
        nonlocal last_ckpt
        losses = meter.state_dict(env_step)  # checked first: a diverged agent never replaces the last good checkpoint
        save_checkpoint(run_dir / "checkpoints" / "latest.pt", {
            "agent": agent.state_dict(), "buffer": buffer.state_dict(), "rng": global_rng_state(),
            "env_rng": env_rng_state(env), "explore_rng": explore_rng.bit_generator.state, "step": step,
            "env_step": env_step,
            "episode": episode, "next_eval": next_eval, "next_ckpt": next_ckpt,
            "wall_s": time.perf_counter() - t0, "eval_s": eval_s, "cpu_s": time.process_time() - c0,
            "eval_cpu_s": eval_cpu_s, "losses": losses, "metrics_rows": len(metrics.rows)})
        last_ckpt = env_step
        if on_checkpoint is not None:
            on_checkpoint(env_step)

    def log_eval(train_return: float, losses: dict[str, float]) -> float:
        nonlocal eval_s, eval_cpu_s, envs_for_eval
        t_eval, c_eval = time.perf_counter(), time.process_time()
        if envs_for_eval is None:
            envs_for_eval = eval_envs(cfg.env, cfg.eval_episodes, cfg.seed, action_repeat)
        try:
            returns = evaluate(agent, envs_for_eval, cfg.eval_episodes, cfg.seed, action_repeat)
        except NonFiniteError as err:
            raise NonFiniteError(f"{err} (in the evaluation at env step {env_step})", what=err.what,
                                 step=env_step) from err
        eval_s += time.perf_counter() - t_eval
        eval_cpu_s += time.process_time() - c_eval
        wall = time.perf_counter() - t0
        row = {"env_step": env_step, "agent_step": step, "wall_s": round(wall, 3),
               "train_wall_s": round(wall - eval_s, 3),
               "train_cpu_s": round(time.process_time() - c0 - eval_cpu_s, 3),
               "eval_return": float(np.mean(returns)),
               "eval_return_std": float(np.std(returns)), "episode": episode, "train_return": train_return}
        row.update({k: float(v) for k, v in losses.items()})
        metrics.write(row)
        if tb is not None:
            for k, v in row.items():
                if k not in ("env_step", "episode"):
                    tb.add_scalar(k, v, env_step)
            tb.flush()
        return row["eval_return"]

    agent.reset()
    ep_return, last_eval = 0.0, float("nan")
    bar = progress_bar(progress and not agent.interactive)  # no bar over a labeller's prompt
    action_space = env.action_space
    assert isinstance(action_space, gymnasium.spaces.Box), "the agent refuses other action spaces"
    try:
        with bar:
            task = bar.add_task(f"{cfg.algo} on {cfg.env}", total=cfg.steps, completed=env_step)
            while env_step < cfg.steps:
                if step < agent.config.explore_steps:
                    action = explore_rng.uniform(action_space.low, action_space.high).astype(np.float32)
                else:
                    action = agent.act(obs)
                    if not np.all(np.isfinite(action)):
                        meter.check(env_step)  # a loss that went NaN first is the better diagnosis
                        state = meter.non_finite_state()
                        raise NonFiniteError(f"the agent's action at env step {env_step + 1} is not finite "
                                             f"({np.asarray(action).tolist()})"
                                             + (f"; its last update reported {state}" if state else ""),
                                             what="action", step=env_step + 1)
                next_obs, reward, terminated, truncated, info = env.step(action)
                try:
                    buffer.add(obs, action, float(reward), next_obs, terminated, truncated)
                except ValueError as err:  # an env whose observations change size
                    raise EnvContractError(f"{cfg.env}: {err}") from err
                step += 1
                taken = int(info.get("env_steps", 1))
                env_step += taken
                ep_return += float(reward)
                obs = next_obs
                meter.add(agent.update(buffer, step), env_step)
                bar.advance(task, taken)
                if on_step is not None:
                    on_step(env_step)
                done = env_step >= cfg.steps
                if terminated or truncated or done:
                    episode += 1
                    if env_step >= next_eval or done:
                        last_eval = log_eval(ep_return, meter.row(env_step))
                        next_eval = (env_step // cfg.eval_every + 1) * cfg.eval_every
                    bar.update(task, description=f"{cfg.algo} on {cfg.env}: episode {episode}, "
                                                 f"return {ep_return:.1f}, eval {last_eval:.1f}")
                    ep_return = 0.0
                    if env_step >= next_ckpt or done:  # before the reset draws from the env's RNG
                        next_ckpt = (env_step // checkpoint_every + 1) * checkpoint_every
                        checkpoint()
                    obs, _ = env.reset()
                    agent.reset()
    except NonFiniteError as err:
        raise TrainingError(_non_finite_message(err, _at(env_step, action_repeat), cfg.env, run_dir,
                                                last_ckpt)) from err
    except EnvContractError as err:
        raise TrainingError(f"{err} ({_at(env_step, action_repeat)}): a bug in the environment's step(); "
                            f"once it is fixed, "
                            f"{_resume_hint(run_dir, last_ckpt)}") from err
    except DiskFullError as err:
        raise DiskFullError(f"{err}; then {_resume_hint(run_dir, last_ckpt)}") from err
    finally:
        if tb is not None:
            tb.close()
        env.close()
        for e in envs_for_eval or []:
            e.close()
    from modelrl.runner.plots import write_learning_curve

    write_learning_curve(run_dir)
    return agent, run_dir


SLOW_ACTION_S = 1.0
"""Seconds per planned action from which a run is warned before it starts (with the expected time and a lighter
preset): PETS at the paper's settings plans for several seconds per action on a laptop CPU, hours per run."""


def matmul_flops_per_s(n: int = 512, repeats: int = 3) -> float:
    """This machine's float32 matmul rate on the current torch threads (best of ``repeats`` n x n x n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def warn_if_planning_is_slow(agent, cfg: TrainConfig, config_cls: type[AgentConfig]) -> str | None:
    """Warn before the first step when the agent's planning would cost at least ``SLOW_ACTION_S`` per action here:
    the FLOPs per action, the seconds it makes on this machine's matmul rate (planning reaches 50-80% of it,
    docs/benchmarks.md), the hours for this run's planned steps, and the algorithm's lighter preset. Returns it."""
    flops = agent.planning_flops()
    if not flops:
        return None
    rate = matmul_flops_per_s()
    per_action = flops / rate
    if per_action < SLOW_ACTION_S:
        return None
    planned = max(0, cfg.steps // (cfg.action_repeat or 1) - agent.config.explore_steps)
    text = (f"{cfg.algo} with these settings plans with {flops / 1e9:,.0f} GFLOP per action: at least "
            f"{per_action:.1f} s per action on this machine (its matmul runs at {rate / 1e9:.0f} GFLOP/s), so the "
            f"{planned:,} planned steps of this run take {per_action * planned / 3600:.1f} h or more, its evaluations "
            f"besides.")
    light = config_cls.LIGHT_PRESET
    cheaper = None if light in (None, cfg.preset) else agent.planning_flops(build_config(config_cls, light, cfg.env))
    if cheaper:
        text += (f" For a laptop: --preset {light} ({cheaper / 1e9:,.1f} GFLOP per action, about "
                 f"{cheaper / rate:.2f} s).")
    warnings.warn(text, stacklevel=2)
    return text


def _count_env_steps(run_dir: Path, saved: dict, cfg: TrainConfig, ckpt: dict) -> TrainConfig:
    """Bring a run written before the loop counted environment steps (its --steps, --eval-every, checkpoint and
    metrics.csv counted agent steps) to the current units: everything times the action repeat, metrics.csv gets
    ``agent_step``, and config.yaml says so, so it resumes as it would have run."""
    k = cfg.action_repeat
    assert k is not None, "called for a run with an action repeat above 1"
    cfg = dataclasses.replace(cfg, steps=cfg.steps * k, eval_every=cfg.eval_every * k,
                              checkpoint_every=cfg.checkpoint_every * k if cfg.checkpoint_every else None)
    save_config(run_dir, {**saved, "train": dataclasses.asdict(cfg)})
    ckpt.update(env_step=ckpt["step"] * k, next_eval=ckpt["next_eval"] * k, next_ckpt=ckpt["next_ckpt"] * k)
    # keep_until=inf: reload every row (MetricsWriter compares it as a number; its int annotation is too narrow)
    writer = MetricsWriter(run_dir, ["env_step", "agent_step"], keep_until=math.inf)
    for row in writer.rows:
        if row.get("agent_step", "") == "":
            row["agent_step"], row["env_step"] = row["env_step"], int(float(row["env_step"])) * k
    writer.flush()
    return cfg


def _resume_hint(run_dir: Path, last_ckpt: int | None) -> str:
    if last_ckpt is None:
        return f"start it again (no checkpoint was written yet; delete {run_dir} or give another --out)"
    return f"--resume {run_dir} continues from its last checkpoint (env step {last_ckpt})"


def _at(env_step: int, repeat: int) -> str:
    """Where the agent step after ``env_step`` env steps happened: "env step 301", or "env steps 301-304"."""
    return f"env step {env_step + 1}" if repeat == 1 else f"env steps {env_step + 1}-{env_step + repeat}"


def _non_finite_message(err: NonFiniteError, at: str, env_id: str, run_dir: Path, last_ckpt: int | None) -> str:
    """What went non-finite where, its likely cause, and whether resuming can help: it does once a broken env
    is fixed; it cannot for a diverged agent, whose resumed run repeats the same updates from the same state."""
    what = f"{err} ({at})" if err.step is None else str(err)  # errors with a step say where already
    if err.what in ("observation", "reward"):
        return (f"{what}. Likely cause: the environment {env_id} itself (a simulator that blew up, or a bug in its "
                f"step()). Once it is fixed, {_resume_hint(run_dir, last_ckpt)}.")
    cause = ("a diverging model or networks (too high a learning rate, exploding values) or a NaN/inf in the "
             "agent's config")
    return (f"non-finite {err.what}: {what}. Likely cause: {cause}. Resuming would repeat the same updates from "
            f"the last checkpoint and fail again: change the settings (e.g. lower the learning rates, another "
            f"--seed) and start a new run with another --out; {run_dir} keeps its metrics and checkpoint.")


def _resume_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint a resume continues from, checked against ``metrics.csv``.

    A damaged ``latest.pt`` falls back on ``latest.prev.pt`` (warned; the damaged file set aside). When
    metrics.csv lost rows that the checkpoint's run had logged (a row cut short is dropped), the previous
    checkpoint is taken if it predates them, so the resumed loop logs them again. No checkpoint at all restarts
    the run in place, unless metrics.csv already holds evaluations, which a restart would overwrite.
    """
    latest = run_dir / "checkpoints" / "latest.pt"
    previous = previous_checkpoint(latest)
    _, rows, dropped = read_metrics(run_dir / "metrics.csv")
    if dropped:
        warnings.warn(f"{run_dir / 'metrics.csv'}: dropped {dropped} incomplete row(s) (cut short or hand-edited); "
                      f"the resumed run logs them again where its checkpoint allows", stacklevel=3)
    if not latest.exists() and not previous.exists():
        if rows:
            raise CheckpointError(
                f"{run_dir} has no checkpoint ({latest} is missing) but metrics.csv holds {len(rows)} evaluation(s), "
                f"up to env step {rows[-1]['env_step']}: resuming would train from step 0 over them. Restore the "
                f"checkpoint, or give the run another --out (delete metrics.csv to start this one over)")
        return None  # stopped before its first checkpoint: start over in place (imitation keeps its labels)
    ckpt = load_checkpoint(latest, set_aside=True)

    def at(c: dict) -> int:  # a checkpoint's env step (metrics.csv's unit), also in runs from before it had one
        return c.get("env_step", c["step"])

    def lost(c: dict) -> int:
        return c.get("metrics_rows", 0) - sum(1 for r in rows if float(r["env_step"]) <= at(c))

    if lost(ckpt) > 0:
        try:
            earlier = read_checkpoint(previous) if previous.exists() else None
        except CheckpointError:
            earlier = None
        if earlier is not None and at(earlier) < at(ckpt) and lost(earlier) <= 0:
            warnings.warn(f"{run_dir / 'metrics.csv'} lost {lost(ckpt)} row(s) logged before the checkpoint at env "
                          f"step {at(ckpt)}: resuming from the previous one (env step {at(earlier)}), which "
                          f"logs them again", stacklevel=3)
            return earlier
        warnings.warn(f"{run_dir / 'metrics.csv'} lost {lost(ckpt)} row(s) logged before the checkpoint at env step "
                      f"{at(ckpt)}, and no earlier checkpoint can log them again: they stay missing",
                      stacklevel=3)
    return ckpt


def _tensorboard(run_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; tolerate a trimmed install
        return None
    return SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
