"""Checkpoints that resume exactly: agent, replay buffer, counters and every RNG state."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def env_rng_state(env) -> dict[str, Any]:
    """The random state an env's next ``reset()`` draws from (Gymnasium np_random; dm_control task)."""
    base = env.unwrapped
    state: dict[str, Any] = {}
    if getattr(base, "_np_random", None) is not None:
        state["np_random"] = base.np_random.bit_generator.state
    task = getattr(getattr(base, "_env", None), "task", None)
    if task is not None and hasattr(task, "random"):
        state["task_random"] = task.random.get_state()
    return state


def set_env_rng_state(env, state: dict[str, Any]) -> None:
    base = env.unwrapped
    if "np_random" in state:
        base.np_random.bit_generator.state = state["np_random"]
    if "task_random" in state:
        base._env.task.random.set_state(state["task_random"])


def global_rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file, then rename): a crash mid-write leaves the previous checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the run stopped before its first checkpoint")
    return torch.load(path, weights_only=False)
