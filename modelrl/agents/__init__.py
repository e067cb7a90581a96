"""Algorithms behind one Agent interface; ``make(name, env, ...)`` builds one by name."""
from __future__ import annotations

import importlib
from typing import Any

import gymnasium

from modelrl.agents.base import Agent, AgentConfig, build_config
from modelrl.types import unknown_name

# name -> (module, config class, agent class); imported on first use so `import modelrl` stays light
AGENTS: dict[str, tuple[str, str, str]] = {
    "mpc": ("modelrl.agents.mpc", "MPCConfig", "MPCAgent"),
    "bc": ("modelrl.agents.imitation", "BCConfig", "BCAgent"),
    "dagger": ("modelrl.agents.imitation", "DAggerConfig", "DAggerAgent"),
    "tdmpc": ("modelrl.agents.tdmpc", "TDMPCConfig", "TDMPCAgent"),
    "tdmpc2": ("modelrl.agents.tdmpc2", "TDMPC2Config", "TDMPC2Agent"),
    "sac": ("modelrl.agents.sac", "SACConfig", "SACAgent"),
    "mbpo": ("modelrl.agents.mbpo", "MBPOConfig", "MBPOAgent"),
}


def agent_classes(name: str) -> tuple[type[AgentConfig], type[Agent]]:
    """The (config, agent) classes registered as ``name``; unknown names list the valid ones."""
    if name not in AGENTS:
        raise unknown_name("algorithm", name, AGENTS)
    module, config_name, agent_name = AGENTS[name]
    mod = importlib.import_module(module)
    return getattr(mod, config_name), getattr(mod, agent_name)


def make(name: str, env: gymnasium.Env, preset: str | None = None, seed: int = 0, device: str = "auto",
         **overrides: Any) -> Agent:
    """Build algorithm ``name`` for ``env`` from its defaults, a preset and field overrides, on ``device``
    (``auto``: CUDA where available, else the CPU)."""
    config_cls, agent_cls = agent_classes(name)
    env_id = env.spec.id if env.spec is not None else None
    return agent_cls(env, build_config(config_cls, preset, env_id, **overrides), seed=seed, device=device)


__all__ = ["Agent", "AgentConfig", "AGENTS", "agent_classes", "build_config", "make"]
