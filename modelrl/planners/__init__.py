"""Planners behind one interface: ``plan(state) -> actions[H, A]``, ``act(state)``, ``reset()``."""
from __future__ import annotations

import difflib

from modelrl.planners.base import Planner, action_bounds, rollout_returns
from modelrl.planners.cem import CEM
from modelrl.planners.ilqr import ILQR
from modelrl.planners.lqr import LQR
from modelrl.planners.mppi import MPPI
from modelrl.planners.random_shooting import RandomShooting
from modelrl.types import Dynamics

PLANNERS = {
    "random_shooting": RandomShooting,
    "cem": CEM,
    "icem": CEM.icem,
    "mppi": MPPI,
    "ilqr": ILQR,
    "lqr": LQR,
}


def make_planner(name: str, dynamics: Dynamics, action_space, **kwargs) -> Planner:
    """Build a planner by name. ``lqr`` needs a model with matrices ``A, B, Q, R`` (LinearDynamics)."""
    key = name.lower().replace("-", "_")
    if key not in PLANNERS:
        close = difflib.get_close_matches(key, list(PLANNERS), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown planner {name!r}.{hint} Choose from: {', '.join(PLANNERS)}.")
    if key == "lqr":
        if not all(hasattr(dynamics, m) for m in ("A", "B", "Q", "R")):
            raise ValueError(
                "LQR needs linear dynamics with quadratic cost (a model with A, B, Q, R such as "
                "LinearDynamics); for a nonlinear task use ilqr."
            )
        return LQR(dynamics.A, dynamics.B, dynamics.Q, dynamics.R, action_space=action_space, **kwargs)
    return PLANNERS[key](dynamics, action_space, **kwargs)


__all__ = ["Planner", "RandomShooting", "CEM", "MPPI", "ILQR", "LQR", "PLANNERS", "make_planner",
           "action_bounds", "rollout_returns"]
