"""Planners behind one interface: ``plan(state) -> actions[H, A]``, ``act(state)``, ``reset()``."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable

from modelrl.planners.base import Planner, action_bounds, rollout_returns
from modelrl.planners.cem import CEM
from modelrl.planners.ilqr import ILQR
from modelrl.planners.lqr import LQR
from modelrl.planners.mppi import MPPI
from modelrl.planners.random_shooting import RandomShooting
from modelrl.types import Dynamics, unknown_name

PLANNERS: dict[str, Callable[..., Planner]] = {  # classes, and one classmethod (CEM.icem)
    "random_shooting": RandomShooting,
    "cem": CEM,
    "icem": CEM.icem,
    "mppi": MPPI,
    "ilqr": ILQR,
    "lqr": LQR,
}


def planner_key(name: str) -> str:
    """The registry key of planner ``name`` (``random-shooting`` is ``random_shooting``); an unknown name is a
    ValueError that suggests the closest ones and lists them all."""
    key = name.lower().replace("-", "_")
    if key not in PLANNERS:
        raise unknown_name("planner", name, PLANNERS)
    return key


# constructor arguments that are not settings: the model, the bounds, the matrices of LQR, and what the caller
# (the command line, an agent) decides itself
_NOT_SETTINGS = frozenset({"self", "dynamics", "action_space", "A", "B", "Q", "R", "seed", "device", "dtype",
                           "state_dim", "terminal_value"})


@functools.cache
def planner_settings(name: str) -> type:
    """A dataclass whose fields are the keyword settings of planner ``name`` with their annotated types: the
    planner's own and, where it passes ``**kwargs`` on, those of ``Planner`` (``gamma``, ``compile``, ...).
    ``modelrl.agents.base.check_fields(planner_settings(name), values)`` checks names and types of settings
    given as data (``modelrl plan --opt KEY=VALUE``)."""
    key = planner_key(name)
    cls = CEM if key == "icem" else typing.cast("type[Planner]", PLANNERS[key])  # the others are classes
    fields: dict[str, object] = {}
    for klass in (cls, Planner):
        params = inspect.signature(klass.__init__).parameters
        hints = typing.get_type_hints(klass.__init__)
        for p in params.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _NOT_SETTINGS:
                fields.setdefault(p.name, hints.get(p.name, typing.Any))
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break  # LQR takes no Planner keywords
    return dataclasses.make_dataclass(f"planner {key}",
                                      [(n, tp, dataclasses.field(default=None)) for n, tp in fields.items()])


def make_planner(name: str, dynamics: Dynamics, action_space, **kwargs) -> Planner:
    """Build a planner by name. ``lqr`` needs a model with matrices ``A, B, Q, R`` (LinearDynamics)."""
    key = planner_key(name)
    if key == "lqr":
        if not is_linear(dynamics):
            raise ValueError(
                "LQR needs linear dynamics with quadratic cost (a model with A, B, Q, R such as "
                "LinearDynamics); for a nonlinear task use ilqr."
            )
        return LQR(dynamics.A, dynamics.B, dynamics.Q, dynamics.R,  # type: ignore[attr-defined]  # is_linear: has them
                   action_space=action_space, **kwargs)
    return PLANNERS[key](dynamics, action_space, **kwargs)


def is_linear(dynamics: Dynamics) -> bool:
    """Whether ``dynamics`` is a linear model with a quadratic cost (matrices ``A, B, Q, R``), which LQR needs."""
    return all(hasattr(dynamics, m) for m in ("A", "B", "Q", "R"))


__all__ = ["Planner", "RandomShooting", "CEM", "MPPI", "ILQR", "LQR", "PLANNERS", "make_planner",
           "planner_key", "planner_settings", "is_linear", "action_bounds", "rollout_returns"]
