"""Replay buffer of transitions, preallocated numpy arrays; checkpointable with its RNG."""
from __future__ import annotations

import os
from typing import SupportsFloat

import numpy as np


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


class ReplayBuffer:
    """FIFO store of (obs, action, reward, next_obs, terminated, truncated) in float32 arrays.

    ``episode_start`` marks the first transition of each episode, which sub-trajectory sampling
    (TD-MPC) and k-step model diagnostics need. ``state_dict``/``load_state_dict`` carry the
    contents and the sampling RNG, so a resumed run samples the same batches.
    """

    def __init__(self, obs_dim: int, action_dim: int, capacity: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        # numpy reserves the arrays lazily, so a capacity no machine can hold would only fail (or be killed)
        # once the buffer fills up: refuse it now, with the numbers
        needed, ram = self.nbytes(obs_dim, action_dim, capacity), physical_memory()
        if ram is not None and needed > ram:
            raise ValueError(f"buffer_capacity {capacity:,} would need {_gb(needed)} of memory ({obs_dim} observation "
                             f"and {action_dim} action entries per transition, float32), more than this machine's "
                             f"{_gb(ram)}: lower buffer_capacity (a run never stores more than its steps)")
        self.obs_dim, self.action_dim, self.capacity = int(obs_dim), int(action_dim), int(capacity)
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((capacity, action_dim), dtype=np.float32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.episode_start = np.zeros(capacity, dtype=bool)
        self.size = 0
        self.pos = 0
        self.total = 0  # transitions ever added
        self._new_episode = True
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def nbytes(obs_dim: int, action_dim: int, capacity: int) -> int:
        """Memory of a full buffer: obs and next_obs, action and reward in float32, three flags per transition."""
        return int(capacity) * (4 * (2 * int(obs_dim) + int(action_dim) + 1) + 3)

    def add(self, obs, action, reward: SupportsFloat, next_obs, terminated: bool, truncated: bool) -> None:
        """Store one transition; the next one starts a new episode when this one ends it."""
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        next_obs = np.asarray(next_obs, dtype=np.float32).reshape(-1)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        for name, array, size in (("obs", obs, self.obs_dim), ("next_obs", next_obs, self.obs_dim),
                                  ("action", action, self.action_dim)):
            if array.shape[0] != size:
                kind = "action" if name == "action" else "observation"
                raise ValueError(f"{name} of transition {self.total + 1}: the {kind} has {array.shape[0]} entries, "
                                 f"the buffer stores {size} (the env's {kind} space)")
        i = self.pos
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self.terminated[i], self.truncated[i] = terminated, truncated
        self.episode_start[i] = self._new_episode
        self._new_episode = bool(terminated or truncated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.total += 1

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A uniform batch of transitions (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.rng.integers(0, self.size, size=batch_size)
        return self.get(idx)

    def get(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"obs": self.obs[idx], "action": self.action[idx], "reward": self.reward[idx],
                "next_obs": self.next_obs[idx], "terminated": self.terminated[idx]}

    def all(self) -> dict[str, np.ndarray]:
        """Every stored transition, oldest first."""
        if self.size < self.capacity:
            idx = np.arange(self.size)
        else:
            idx = (np.arange(self.capacity) + self.pos) % self.capacity
        return self.get(idx)

    _ARRAYS = ("obs", "next_obs", "action", "reward", "terminated", "truncated", "episode_start")

    def state_dict(self) -> dict:
        state = {k: getattr(self, k)[: self.size].copy() for k in self._ARRAYS}
        state.update(size=self.size, pos=self.pos, total=self.total, new_episode=self._new_episode,
                     rng=self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for key in self._ARRAYS:
            getattr(self, key)[:n] = state[key]
        self.size, self.pos, self.total = n, int(state["pos"]), int(state["total"])
        self._new_episode = bool(state["new_episode"])
        self.rng.bit_generator.state = state["rng"]
