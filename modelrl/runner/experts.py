"""Building experts from spec strings, and handing agents the run-time things only the runner may create.

``resolve_expert("mppi", env_id, ...)`` is the planner on the env's true model with the
``modelrl plan`` preset for that env (``PLAN_PRESETS``, updated by ``EXPERT_PRESETS``);
``run:PATH`` loads the agent of another run directory; ``human`` prompts on the terminal. The run loop hands
``resolve_expert`` to agents as ``RunContext.make_expert`` (an imitation agent builds its expert with it).
"""
from __future__ import annotations

from typing import Any, TextIO

from modelrl.agents.experts import AgentExpert, Expert, HumanExpert, PlannerExpert, parse_expert_spec
from modelrl.envs import make_env, true_dynamics
from modelrl.runner.options import parse_assignments
from modelrl.runner.plan import resolved_planner_kwargs
from modelrl.runner.rundir import load_agent

# Expert settings that differ from the ``modelrl plan`` presets (PLAN_PRESETS), each measured.
EXPERT_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # Horizon 15 (the plan preset) stays stuck near the bottom (theta ~ 2.7) from 4 of the 30
    # evaluation starts of seeds 0-2 (return ~ -1495 each); horizon 20: none stuck, mean -152.3
    # (15: -275; 25: -151.2; 30: -157.7; 10 episodes x 3 seeds, ours). Planned from scratch for
    # every label (3 MPPI iterations, mean -154.0) so that a label depends on the observation
    # alone: dagger --preset multimodal students of this expert came within 1% of it on seeds
    # 0-2, those of the warm-started one 2% to 30% short (docs/imitation.md).
    ("mppi", "Pendulum-v1"): {"horizon": 20, "warm_start": False, "iterations": 3},
}

# Names shown to a human labeller, per env (observation entries in order).
OBS_NAMES: dict[str, list[str]] = {
    "Pendulum-v1": ["cos_th", "sin_th", "thdot"],
    "CartPoleSwingUp-v0": ["x", "x_dot", "cos_th", "sin_th", "th_dot"],
}


def parse_opts(opts: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``("horizon=20", "num_samples=500")`` -> ``{"horizon": 20, "num_samples": 500}`` (``runner.options``)."""
    return parse_assignments(opts, "expert options")


def resolve_expert(spec: str | None, env_id: str, seed: int = 0, opts: tuple[str, ...] | list[str] = (),
                   action_space=None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> Expert | None:
    """The expert that ``spec`` names for ``env_id`` (None for ``none``); ``ValueError`` if it cannot be built."""
    kind, arg = parse_expert_spec(spec)
    if kind == "none":
        return None
    if action_space is None:
        env = make_env(env_id)
        action_space = env.action_space
        env.close()
    if kind == "human":
        return HumanExpert(action_space, stdin=stdin, stdout=stdout, obs_names=OBS_NAMES.get(env_id))
    assert arg is not None  # "run" and "planner" come with a path or a name
    if kind == "run":
        agent, saved = load_agent(arg)
        if saved["train"]["env"] != env_id:
            raise ValueError(f"expert run {arg} was trained on {saved['train']['env']}, not {env_id}")
        return AgentExpert(agent, name=f"run:{arg}")
    kwargs = resolved_planner_kwargs(arg, env_id, {**EXPERT_PRESETS.get((arg, env_id), {}), **parse_opts(opts)})
    try:
        return PlannerExpert(arg, true_dynamics(env_id), action_space, seed=seed, **kwargs)
    except TypeError as err:  # a keyword the planner does not take
        raise ValueError(f"expert {arg}: {err}") from err
