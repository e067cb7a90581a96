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
    """The process-wide generators: torch's CPU one, every CUDA device's (where CUDA is present), numpy, random."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore ``global_rng_state``; CUDA states are restored where the same number of devices exists
    (a checkpoint moved to a machine without CUDA, or with another count, keeps the CPU ones only)."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file, then rename): a crash mid-write leaves the previous checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Every tensor is loaded onto the CPU (``map_location``), whatever device wrote it; agents move
    what they hold to their own device, so a CUDA checkpoint resumes on a CPU machine and back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the run stopped before its first checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
