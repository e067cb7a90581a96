"""The Agent interface every algorithm implements, and the config/preset machinery they share."""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import gymnasium
import numpy as np

from modelrl.device import keep_freed_memory, resolve_device
from modelrl.types import suggestions, unknown_name


@dataclasses.dataclass
class AgentConfig:
    """Base of every algorithm's config dataclass; subclasses add fields with cited defaults."""

    explore_steps: int = 0
    """Environment steps with uniform random actions before the agent acts (seed data)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    LIGHT_PRESET: ClassVar[str | None] = None
    """The preset to suggest when a run's planning would take hours on the machine (see ``Agent.planning_flops``)."""
    LEGACY_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Fields that older versions wrote into run directories and that no longer exist: ignored when read."""

    @classmethod
    def task_defaults(cls, env_id: str | None) -> dict[str, Any]:
        """Per-task values of the official configuration for ``env_id`` (applied under the preset and the
        user's values); none by default."""
        return {}

    @classmethod
    def default_action_repeat(cls, env_id: str | None) -> int:
        """The action repeat a run of this algorithm on ``env_id`` uses unless given one: 1 by default."""
        return 1


def build_config(cls: type[AgentConfig], preset: str | None = None, env_id: str | None = None,
                 **overrides: Any) -> AgentConfig:
    """``cls`` defaults, then the official per-task values for ``env_id`` (``cls.task_defaults``), then the
    named preset, then ``overrides``; every value is checked by ``check_fields`` (unknown names list the
    valid ones, a value of the wrong type or NaN is refused naming its field)."""
    values: dict[str, Any] = dict(cls.task_defaults(env_id))
    if preset is not None:
        if preset not in cls.PRESETS:
            raise unknown_name("preset", preset, cls.PRESETS, where=f" for {cls.__name__}",
                               listing=f"Presets: {', '.join(cls.PRESETS) or 'none'}.")
        values.update(cls.PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if k not in cls.LEGACY_FIELDS})
    return cls(**check_fields(cls, values))


def check_fields(cls: type, values: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    """``values`` for the dataclass ``cls``, each checked against its field's type annotation: the one validation
    every config source goes through (flags, ``--config`` files, a run's config.yaml, the Python API).

    Unknown names are refused with the closest valid one. Values are coerced where the meaning is plain: numbers
    written as text (``"1e-3"``, which YAML 1.1 reads as a string), integral floats for integer fields (``1.0e6``),
    lists for tuples. NaN and inf are refused for every number. Anything else that does not fit is a ValueError
    naming the field, prefixed with ``where`` (a file) when given, instead of a TypeError deep inside a run.
    """
    prefix = f"{where}: " if where else ""
    hints = _field_types(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        names = []
        for name in unknown:
            close = suggestions(name, sorted(hints), n=1, cutoff=0.5)
            names.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{prefix}Unknown field(s) {', '.join(names)} for {cls.__name__}. "
                         f"Valid fields: {', '.join(sorted(hints))}.")
    out = {}
    for name, value in values.items():
        try:
            out[name] = _coerce(value, hints[name])
        except _Mismatch as err:
            raise ValueError(f"{prefix}{name} must be {err}, got {value!r}") from None
    return out


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


class _Mismatch(Exception):
    """A value that does not fit a type; the message says what was expected."""


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (int, float, bool, str, Literal, X | None, tuples of them), or ``_Mismatch``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        expected = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except _Mismatch as err:
                expected.append(str(err))
        raise _Mismatch(" or ".join(expected + (["null"] if type(None) in args else [])))
    if origin is Literal:
        if value in args:
            return value
        close = suggestions(str(value), [str(a) for a in args], n=1) if isinstance(value, str) else []
        raise _Mismatch("one of " + ", ".join(map(repr, args)) + (f" (did you mean {close[0]!r}?)" if close else ""))
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        what = (f"a list of {len(args)} {_NAMES.get(args[0], 'values')}" if fixed
                else f"a list of {_NAMES.get(args[0], 'values')}")
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            raise _Mismatch(what)
        try:
            return tuple(_coerce(v, a) for v, a in zip(value, args if fixed else [args[0]] * len(value)))
        except _Mismatch:
            raise _Mismatch(what) from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Mismatch("true or false")
    if tp is int:
        number = _number(value)
        if number is None or not (isinstance(number, int) or number.is_integer()):
            raise _Mismatch("an integer")
        return int(number)
    if tp is float:
        number = _number(value)
        if number is None:
            raise _Mismatch("a finite number")
        return number
    if tp is str:
        if isinstance(value, os.PathLike):  # a path given to the Python API
            return os.fspath(value)
        if not isinstance(value, str):
            raise _Mismatch("a string")
        return value
    return value


_NAMES = {int: "integers", float: "finite numbers", str: "strings", bool: "booleans"}


def _number(value: Any) -> int | float | None:
    """A finite int or float from a number or its text (ints stay ints, so a value that worked is unchanged);
    None for anything else: booleans, NaN, inf, words."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy or torch scalar
            return _number(value.item())
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Bounds on the log std of a state-dependent Gaussian policy, (min, max). SAC's are those of Stable-Baselines3
# (sac/policies.py LOG_STD_MIN/MAX) and of the authors' softlearning code (gaussian policy: -20, 2). Behaviour cloning
# uses CleanRL's tighter floor (sac_continuous_action.py: -5, 2), ours for BC: a near-deterministic expert would
# otherwise drive the likelihood's std towards zero.
SAC_LOG_STD_BOUNDS = (-20.0, 2.0)
BC_LOG_STD_BOUNDS = (-5.0, 2.0)


# The random streams of a run, each seeded with the run's seed plus a fixed offset: every stream's seed in one table.
# The offsets are the ones the code always used, so seeded results (tests, the benchmark tables) reproduce; numpy
# (PCG64) and torch (Mersenne Twister) streams that share an offset draw unrelated numbers. (numpy's
# SeedSequence.spawn would give provably independent streams, at the price of every published seeded number.)
RNG_STREAMS: dict[str, int] = {
    "loop.explore": 1,  # numpy: the run loop's uniform random actions before the agent acts (runner.train)
    "mpc.model": 0,  # torch: the model's initial weights
    "mpc.trainer": 0,  # torch: the model trainer's holdout split and minibatches (a generator of its own)
    "mpc.propagation": 1,  # torch: LearnedDynamics' particle and member draws
    "mpc.planner": 2,  # torch: the planner's candidate samples
    "mpc.base_policy": 3,  # numpy: the MPC agent's actions before its first fit
    "sac.updates": 0,  # torch: minibatch indices and policy noise of the SAC updates
    "sac.init": 1,  # torch: the networks' initial weights
    "mbpo.model": 10,  # torch: the ensemble's initial weights
    "mbpo.trainer": 11,  # torch: the model trainer's holdout split and minibatches
    "mbpo.propagation": 12,  # torch: member draws of the branched rollouts (TS1)
    "mbpo.rollouts": 13,  # torch: the rollouts' policy noise
    "mbpo.starts": 14,  # numpy: rollout start states drawn from D_env
    "tdmpc.planning": 11,  # torch: planning noise
    "tdmpc.updates": 12,  # torch: policy noise and Q-head draws in the updates
    "tdmpc.sampler": 13,  # numpy: sub-trajectory indices (prioritised replay)
    "tdmpc2.planning": 11,  # torch: planning noise, policy draws and Q-head draws while planning
    "tdmpc2.updates": 12,  # torch: policy draws and Q-head draws in the updates
    "tdmpc2.sampler": 13,  # numpy: sub-trajectory indices (uniform replay)
    "imitation.beta": 0,  # numpy: DAgger's coin flips between expert and learner
    "imitation.updates": 1,  # torch: minibatches and Gaussian policy samples
    "imitation.init": 2,  # torch: the policy's initial weights
}


def stream_seed(seed: int, stream: str) -> int:
    """The seed of the named random ``stream`` (``RNG_STREAMS``) of a run with ``seed``."""
    return seed + RNG_STREAMS[stream]


class RunStopped(RuntimeError):
    """A run stopped on purpose before its end (a person stopped labelling): nothing is lost and ``--resume``
    continues it. The run loop lets it through; the command line reports it as "stopped" (exit status 1)."""


@dataclasses.dataclass
class RunContext:
    """What the run loop hands an agent once the run directory exists (``Agent.on_run_start``)."""

    run_dir: Path
    algo: str
    """The name the run trains under (``modelrl train ALGO``)."""
    make_expert: Callable[..., Any]
    """The runner's expert factory, ``make_expert(spec, env_id, seed=, opts=, action_space=)`` -> an Expert or None:
    a planner on the env's true model, another run's agent, or a person at the terminal."""


class Agent(ABC):
    """An algorithm the run loop can drive: act, learn from the replay buffer, checkpoint.

    ``update(buffer, step)`` is called after every environment step; the agent decides what
    to do then (a gradient step, a model refit at an episode end, nothing).
    """

    config: AgentConfig

    @property
    def interactive(self) -> bool:
        """The agent asks a person during the run (the loop then shows no progress bar over the prompt)."""
        return False

    def on_run_start(self, run: RunContext) -> None:
        """Called by the run loop once the run directory exists, new or resumed, before the first step: the agent
        takes what only a run provides (an imitation agent: its expert and its label data set in the run)."""

    def planning_flops(self, config: AgentConfig | None = None) -> float | None:
        """Floating-point operations of one planned action with ``config`` (default: the agent's own), for agents
        whose cost per action is dominated by planning; None for the others. The run loop warns with it before a
        run whose planning would take hours."""
        return None

    def __init__(self, env: gymnasium.Env, config: AgentConfig, seed: int = 0, device: str | Any = "auto") -> None:
        obs_space, action_space = env.observation_space, env.action_space
        if not isinstance(action_space, gymnasium.spaces.Box) or not isinstance(obs_space, gymnasium.spaces.Box):
            raise ValueError("agents need Box observation and action spaces (use modelrl.make_env)")
        self.config = config
        self.seed = seed
        self.obs_dim = int(np.prod(obs_space.shape))
        self.action_dim = int(np.prod(action_space.shape))
        self.action_space = action_space
        self.env_id = env.spec.id if env.spec is not None else None
        self.device = resolve_device(device)
        """Where every module, tensor and generator of the agent lives (``auto``: CUDA where available)."""
        if self.device.type == "cpu":
            keep_freed_memory()  # glibc: no page faults on every large temporary (modelrl.device)

    @abstractmethod
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The action for ``obs`` (in [-1, 1]); ``deterministic`` asks for the agent's best, not exploratory, action
        (as evaluations do)."""

    @abstractmethod
    def update(self, buffer, step: int) -> dict[str, float]:
        """Learn from ``buffer`` after environment step ``step``; returns losses to log (may be empty)."""

    def reset(self) -> None:
        """Called at the start of every episode (planners drop their warm start)."""

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``[B, A]`` for B independent episodes run in lockstep (``obs[B, S]``), each with its own
        planner state. Agents that can (all built in) override it; this fallback raises, and the
        evaluation loop then runs the episodes one after another."""
        raise NotImplementedError(f"{type(self).__name__} does not act on a batch of episodes")

    def keep_rows(self, rows: np.ndarray) -> None:
        """The lockstep batch shrinks to ``rows`` (indices into the last batch): per-episode state such as
        a planner's warm starts follows. Agents without such state need not override it."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, optimisers, RNG states, counters."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# -- time accounting shared by the agents (metrics.csv columns time_<part>_s, time_cpu_<part>_s)
def new_timing(parts: tuple[str, ...]) -> dict[str, float]:
    """Cumulative seconds per part of an agent's update: wall-clock (``<part>_s``) and process CPU time
    (``cpu_<part>_s``, which other jobs on a shared machine do not inflate)."""
    return {f"{prefix}{part}_s": 0.0 for prefix in ("", "cpu_") for part in parts}


def clocks() -> tuple[float, float]:
    """(wall-clock, process CPU time) now, the start mark for ``charge``."""
    return time.perf_counter(), time.process_time()


def charge(timing: dict[str, float], part: str, mark: tuple[float, float]) -> tuple[float, float]:
    """Add the time since ``mark`` to ``part``; returns the new mark (for the next part)."""
    now = clocks()
    timing[f"{part}_s"] += now[0] - mark[0]
    timing[f"cpu_{part}_s"] += now[1] - mark[1]
    return now


def timing_columns(timing: dict[str, float]) -> dict[str, float]:
    """The metrics.csv columns of a timing dict: ``time_<key>``."""
    return {f"time_{k}": v for k, v in timing.items()}
