"""Experts that label observations with actions (Ross, Gordon, Bagnell 2011, "A reduction of imitation learning
and structured prediction to no-regret online learning"): the pluggable labeller of DAgger.

Three kinds behind one interface, ``label(obs) -> action[A]``:
- ``PlannerExpert``: any planner on a known model (MPC as teacher: distil a slow planner);
- ``AgentExpert``: any trained modelrl agent (its evaluation action);
- ``HumanExpert``: a person at a terminal prompt, shown the observation, typing the action.
``check_label`` refuses bad labels (NaN, wrong shape, out of bounds) with a message naming the
expert, the observation and the fault. The spec strings the command line takes (``mppi``,
``run:PATH``, ``human``) are parsed here; building an expert that needs files (another run's
checkpoint) or presets is the runner's job (``modelrl.runner.experts``).
"""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, TextIO

import numpy as np

from modelrl.agents.base import RunStopped
from modelrl.planners import PLANNERS, make_planner
from modelrl.types import unknown_name


class BadLabelError(ValueError):
    """An expert returned a label that cannot be an action of the task."""


class LabellingStopped(RunStopped):
    """The labeller stopped (a person typed ``q`` or the input ended); the run can be resumed."""


class Expert(ABC):
    """Labels one observation with the action to take there."""

    name: str = "expert"

    @abstractmethod
    def label(self, obs: np.ndarray) -> np.ndarray:
        """The expert's action for ``obs`` (unchecked; the caller runs ``check_label``)."""

    def reset(self) -> None:
        """Called at every episode start (planners drop their warm start)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs for the next label to be the same (planner RNG, warm start)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""


def check_label(action, action_space, obs: np.ndarray | None = None, expert: str = "expert",
                atol: float = 1e-6) -> np.ndarray:
    """``action`` as float32 [A] if it is a valid action of ``action_space``; else ``BadLabelError``.

    A scalar is accepted for one-dimensional actions. Values outside the bounds by at most
    ``atol`` (float rounding) are clipped; anything further out is refused.
    """
    low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)

    def where() -> str:  # formatted only for an error: labelling is on the hot path
        return "" if obs is None else f" for observation {np.array2string(np.asarray(obs), precision=4)}"

    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise BadLabelError(f"{expert} gave a label that is not numeric{where()}: {action!r}") from err
    if a.ndim == 0 and low.shape[0] == 1:
        a = a.reshape(1)
    if a.shape != low.shape:
        raise BadLabelError(f"{expert} gave a label of shape {a.shape}{where()}; actions have shape {low.shape}")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a)).tolist()
        raise BadLabelError(f"{expert} gave a label with NaN or inf at index {bad}{where()}: {a.tolist()}")
    out = (a < low - atol) | (a > high + atol)
    if np.any(out):
        bad = np.flatnonzero(out).tolist()
        raise BadLabelError(f"{expert} gave a label out of bounds at index {bad}{where()}: {a.tolist()} "
                            f"(bounds [{low.tolist()}, {high.tolist()}])")
    return np.clip(a, low, high).astype(np.float32)


class PlannerExpert(Expert):
    """A planner on a model labels with its first planned action (MPC as the teacher).

    With ``warm_start`` (the planners' usual mode) each plan starts from the previous one, so
    a label depends on the states labelled before it, not on the observation alone; without,
    every label is planned from scratch (give the planner more iterations to make up for it).
    """

    def __init__(self, planner: str, dynamics, action_space, seed: int | None = None, warm_start: bool = True,
                 **planner_kwargs: Any) -> None:
        self.name = planner
        self.planner = make_planner(planner, dynamics, action_space, seed=seed, **planner_kwargs)
        self.planner_kwargs = planner_kwargs
        self.warm_start = warm_start

    def label(self, obs: np.ndarray) -> np.ndarray:
        if not self.warm_start:  # plan from scratch: the label is a function of the observation alone
            self.planner.reset()
        return self.planner.act(obs)

    def reset(self) -> None:
        self.planner.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"planner": self.planner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "planner" in state:
            self.planner.load_state_dict(state["planner"])


class AgentExpert(Expert):
    """A trained modelrl agent labels with its evaluation action (``act(obs, deterministic=True)``)."""

    def __init__(self, agent, name: str = "agent") -> None:
        self.agent = agent
        self.name = name

    def label(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.act(obs, deterministic=True)

    def reset(self) -> None:
        self.agent.reset()


class HumanExpert(Expert):
    """A person labels at a prompt: shown the observation, types the action (numbers, space or comma separated).

    A refused entry (not numbers, wrong count, NaN, out of bounds) is explained and asked
    again. ``q`` or the end of the input raises ``LabellingStopped``: every label given so far
    is already on disk, and ``--resume`` continues where the person stopped.
    """

    name = "human"

    def __init__(self, action_space, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 obs_names: list[str] | None = None, max_attempts: int = 20) -> None:
        self.action_space = action_space
        self.stdin = stdin if stdin is not None else sys.stdin
        self.stdout = stdout if stdout is not None else sys.stdout
        self.obs_names = obs_names
        self.max_attempts = max_attempts
        self.asked = 0
        self.resume_hint = "resume the run to continue"  # the runner names the run directory

    def label(self, obs: np.ndarray) -> np.ndarray:
        self.asked += 1
        low, high = self.action_space.low.reshape(-1), self.action_space.high.reshape(-1)
        names = self.obs_names or [f"obs[{i}]" for i in range(len(obs))]
        shown = "  ".join(f"{n}={v:+.4f}" for n, v in zip(names, np.asarray(obs).reshape(-1)))
        self.stdout.write(f"\n[label {self.asked}] {shown}\n")
        for _ in range(self.max_attempts):
            self.stdout.write(f"action ({len(low)} number{'s' if len(low) > 1 else ''} in "
                              f"[{', '.join(f'{lo:g}..{hi:g}' for lo, hi in zip(low, high))}], q to stop)> ")
            self.stdout.flush()
            line = self.stdin.readline()
            if line == "" or line.strip().lower() in ("q", "quit"):
                raise LabellingStopped(f"the human labeller stopped after {self.asked - 1} labels in this session; "
                                       f"every label given is saved ({self.resume_hint})")
            try:
                values = [float(x) for x in line.replace(",", " ").split()]
                return check_label(np.array(values) if len(values) != 1 else values[0], self.action_space,
                                   expert="human")
            except (ValueError, BadLabelError) as err:
                msg = str(err) if isinstance(err, BadLabelError) else f"not a number: {line.strip()!r}"
                self.stdout.write(f"refused: {msg}\n")
        raise BadLabelError(f"human gave {self.max_attempts} refused labels in a row")


# -- expert specs as the command line writes them --------------------------------------------

EXPERT_KINDS = ("run:PATH", "human", "none")


def expert_choices() -> list[str]:
    """Every spec word accepted: planner names, ``run:PATH``, ``human``, ``none``."""
    return [p for p in PLANNERS if p != "lqr"] + list(EXPERT_KINDS)


def parse_expert_spec(spec: str | None) -> tuple[str, str | None]:
    """``spec`` as (kind, argument): ("planner", name), ("run", path), ("human", None) or ("none", None).

    Raises ``ValueError`` naming the valid choices (and a close match) for anything else.
    """
    if spec is None or spec == "none":
        return "none", None
    if spec.startswith("run:"):
        path = spec[4:]
        if not path:
            raise ValueError("expert 'run:PATH' needs a run directory after 'run:'")
        return "run", path
    if spec == "human":
        return "human", None
    key = spec.lower().replace("-", "_")
    if key in PLANNERS and key != "lqr":
        return "planner", key
    choices = expert_choices()
    raise unknown_name("expert", spec, choices, cutoff=0.5)
