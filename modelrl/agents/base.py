"""The Agent interface every algorithm implements, and the config/preset machinery they share."""
from __future__ import annotations

import dataclasses
import difflib
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium
import numpy as np

from modelrl.device import resolve_device


@dataclasses.dataclass
class AgentConfig:
    """Base of every algorithm's config dataclass; subclasses add fields with cited defaults."""

    explore_steps: int = 0
    """Environment steps with uniform random actions before the agent acts (seed data)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
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
    named preset, then ``overrides``; unknown names list the valid ones."""
    values: dict[str, Any] = dict(cls.task_defaults(env_id))
    if preset is not None:
        if preset not in cls.PRESETS:
            close = difflib.get_close_matches(preset, list(cls.PRESETS), n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"Unknown preset {preset!r} for {cls.__name__}.{hint} "
                             f"Presets: {', '.join(cls.PRESETS) or 'none'}.")
        values.update(cls.PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if k not in cls.LEGACY_FIELDS})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(fields), n=1, cutoff=0.5)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"Unknown field(s) {', '.join(hints)} for {cls.__name__}. "
                         f"Valid fields: {', '.join(sorted(fields))}.")
    return cls(**values)


class Agent(ABC):
    """An algorithm the run loop can drive: act, learn from the replay buffer, checkpoint.

    ``update(buffer, step)`` is called after every environment step; the agent decides what
    to do then (a gradient step, a model refit at an episode end, nothing).
    """

    config: AgentConfig

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

    @abstractmethod
    def act(self, obs: np.ndarray, eval: bool = False) -> np.ndarray:
        """The action for ``obs`` (in [-1, 1]); ``eval`` asks for the agent's best, not exploratory, action."""

    @abstractmethod
    def update(self, buffer, step: int) -> dict[str, float]:
        """Learn from ``buffer`` after environment step ``step``; returns losses to log (may be empty)."""

    def reset(self) -> None:
        """Called at the start of every episode (planners drop their warm start)."""

    def act_batch(self, obs: np.ndarray, eval: bool = False) -> np.ndarray:
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
