"""Sub-trajectory sampling from a ``ReplayBuffer``: windows of H consecutive transitions of one episode.

TD-MPC trains on H-step windows (s_t, a_t, r_t, s_{t+1}, ..., a_{t+H-1}, r_{t+H-1}, s_{t+H}).
``SubTrajectorySampler`` keeps, beside the buffer, which slots start a valid window (all H
transitions stored, none after the first starting an episode) and, for prioritised replay
(Schaul et al. 2016, as in TD-MPC's official ``ReplayBuffer``), a priority per start slot in a
sum tree, so sampling and priority updates cost O(B log N) even for a buffer of 1M transitions.

It follows the buffer through ``buffer.total`` (transitions ever added) and the ring position,
so the buffer's API is untouched; call ``sync(buffer)`` (``sample`` does) after adding.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SumTree:
    """Binary tree of non-negative leaf values with their sums; vectorised over batches of leaves.

    ``combine`` is how a node joins its two children: ``np.add`` (sums, for sampling by mass) or
    ``np.maximum`` (``MaxTree``: the largest leaf at the root)."""

    # staticmethod() of a ufunc keeps only its scalar overload in numpy's stubs: the array one is declared here
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = staticmethod(np.add)  # type: ignore[assignment]

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.size = 1 << max(0, (self.capacity - 1).bit_length())  # leaves, a power of two
        self.tree = np.zeros(2 * self.size, dtype=np.float64)  # node i has children 2i, 2i+1; root 1

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaves(self) -> np.ndarray:
        return self.tree[self.size:self.size + self.capacity]

    def set(self, idx: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``idx`` to ``values`` and refresh their ancestors (one pass per tree level)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return
        nodes = idx + self.size
        self.tree[nodes] = values
        nodes = np.unique(nodes >> 1)
        while nodes[0] >= 1:
            self.tree[nodes] = self.combine(self.tree[2 * nodes], self.tree[2 * nodes + 1])
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes >> 1)

    def rebuild(self, leaf_values: np.ndarray) -> None:
        self.tree[:] = 0.0
        self.tree[self.size:self.size + self.capacity] = leaf_values
        for level_start in (self.size >> k for k in range(1, self.size.bit_length())):
            nodes = np.arange(level_start, 2 * level_start)
            self.tree[nodes] = self.combine(self.tree[2 * nodes], self.tree[2 * nodes + 1])

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative interval contains each ``mass`` in [0, total)."""
        mass = np.asarray(mass, dtype=np.float64).copy()
        nodes = np.ones(mass.shape, dtype=np.int64)
        while nodes[0] < self.size:
            left = 2 * nodes
            go_right = mass >= self.tree[left]
            mass -= np.where(go_right, self.tree[left], 0.0)
            nodes = left + go_right
        return np.minimum(nodes - self.size, self.capacity - 1)


class MaxTree(SumTree):
    """The same tree with the maximum of the leaves at each node; ``total`` is the largest leaf."""

    combine = staticmethod(np.maximum)  # type: ignore[assignment]  # as SumTree.combine


class SubTrajectorySampler:
    """Uniform or prioritised sampling of length-``horizon`` windows from a ``ReplayBuffer``.

    ``prioritized``: P(i) = p_i^alpha / sum_j p_j^alpha over valid starts, importance weights
    (N P(i))^-beta / max over the batch; a window entering the sampler gets the largest priority
    among the windows stored now (1 while there are none: official ``ReplayBuffer.add``, the
    maximum of the buffer's current priorities, so a large TD error stops counting once updated
    or overwritten), and ``update_priorities`` sets p_i = |TD error| + eps (official TD-MPC:
    per_alpha 0.6, per_beta 0.4, eps 1e-6).
    """

    def __init__(self, capacity: int, horizon: int, prioritized: bool = True, alpha: float = 0.6,
                 beta: float = 0.4, eps: float = 1e-6, seed: int | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.capacity, self.horizon = int(capacity), int(horizon)
        self.prioritized, self.alpha, self.beta, self.eps = bool(prioritized), float(alpha), float(beta), float(eps)
        self.valid = np.zeros(self.capacity, dtype=bool)
        self.priority = np.ones(self.capacity, dtype=np.float32)  # p_i of each start slot
        self.ep_index = np.zeros(self.capacity, dtype=np.int64)  # transitions before this one in its episode (stored)
        self.tree = SumTree(self.capacity)
        self.max_tree = MaxTree(self.capacity)  # valid starts' priorities (not raised to alpha)
        self.seen = 0  # buffer.total at the last sync
        self.rng = np.random.default_rng(seed)

    # -- following the buffer ---------------------------------------------------------------
    def _leaf(self, slots: np.ndarray) -> np.ndarray:
        v = self.valid[slots].astype(np.float64)
        return v * self.priority[slots].astype(np.float64) ** self.alpha if self.prioritized else v

    def _set_leaves(self, slots: np.ndarray) -> None:
        self.tree.set(slots, self._leaf(slots))
        self.max_tree.set(slots, self.valid[slots] * self.priority[slots].astype(np.float64))

    @property
    def max_priority(self) -> float:
        """The largest priority among the stored valid windows; 1 when there are none."""
        return self.max_tree.total if self.max_tree.total > 0 else 1.0

    def sync(self, buffer) -> None:
        """Take in the transitions added to ``buffer`` since the last call."""
        if buffer.capacity != self.capacity:
            raise ValueError(f"buffer capacity {buffer.capacity} != sampler capacity {self.capacity}")
        new = buffer.total - self.seen
        if new <= 0:
            return
        if new > self.capacity or self.seen == 0:
            self._rebuild(buffer)
            return
        cap = self.capacity
        k = np.arange(new)
        slots = (buffer.pos - new + k) % cap
        start = buffer.episode_start[slots]
        last = np.maximum.accumulate(np.where(start, k, -1))
        prev = self.ep_index[(slots[0] - 1) % cap]
        self.ep_index[slots] = np.where(last >= 0, k - last, prev + 1 + k)
        self._mark(slots)
        self.seen = buffer.total

    def _mark(self, slots: np.ndarray) -> None:
        """Newly written ``slots`` (in write order): the windows they started before being overwritten
        leave, and each one that is at least H-1 transitions into its episode completes the window that
        starts H-1 slots back, which enters at the current maximum priority (official)."""
        cap, h = self.capacity, self.horizon
        self.valid[slots] = False
        self._set_leaves(slots)  # overwritten windows leave before the maximum is read
        complete = slots[self.ep_index[slots] >= h - 1]
        starts = (complete - (h - 1)) % cap
        self.priority[starts] = self.max_priority
        self.valid[starts] = True
        self._set_leaves(np.unique(starts))

    def _rebuild(self, buffer) -> None:
        """Recompute validity from the stored episode flags (first sync, or after more than a buffer's worth)."""
        n, cap = buffer.size, self.capacity
        order = np.arange(n) if n < cap else (np.arange(cap) + buffer.pos) % cap  # oldest first
        k = np.arange(n)
        last = np.maximum.accumulate(np.where(buffer.episode_start[order], k, 0))
        self.valid[:] = False
        self.max_tree.rebuild(np.zeros(cap))  # every window is new: they enter at priority 1
        self.ep_index[order] = k - last  # the oldest stored transition counts as its episode's first
        self.priority[order] = 1.0
        h = self.horizon
        ok = self.ep_index[order] >= h - 1
        self.valid[order[np.flatnonzero(ok) - (h - 1)]] = True
        self._rebuild_trees()
        self.seen = buffer.total

    def _rebuild_trees(self) -> None:
        every = np.arange(self.capacity)
        self.tree.rebuild(self._leaf(every))
        self.max_tree.rebuild(self.valid * self.priority.astype(np.float64))

    # -- sampling -----------------------------------------------------------------------------
    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def sample(self, buffer, batch_size: int) -> dict[str, np.ndarray]:
        """``batch_size`` windows: ``obs[B, S]`` (s_t), ``action[H, B, A]``, ``reward[H, B]``,
        ``next_obs[H, B, S]`` (s_{t+1..t+H}), ``terminated[H, B]`` (only a window's last step can be
        terminal: windows stay inside one episode), ``idx[B]`` (start slots), ``weight[B]`` (IS weights)."""
        self.sync(buffer)
        total = self.tree.total
        if total <= 0:
            raise ValueError(f"no stored window of {self.horizon} steps within one episode yet "
                             f"({buffer.size} transitions)")
        # stratified: one draw in each of B equal slices of the total mass (fewer repeats than i.i.d.)
        mass = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
        idx = self.tree.find(mass)
        if not self.valid[idx].all():  # float round-off can land on a zero leaf
            idx = np.where(self.valid[idx], idx, self._any_valid(idx))
        if self.prioritized:
            p = self._leaf(idx) / total
            w = (self.num_valid * p) ** (-self.beta)
            weight = (w / w.max()).astype(np.float32)
        else:
            weight = np.ones(batch_size, dtype=np.float32)
        steps = (idx[None, :] + np.arange(self.horizon)[:, None]) % self.capacity  # [H, B]
        return {"obs": buffer.obs[idx], "action": buffer.action[steps], "reward": buffer.reward[steps],
                "next_obs": buffer.next_obs[steps], "terminated": buffer.terminated[steps], "idx": idx,
                "weight": weight}

    def _any_valid(self, idx: np.ndarray) -> np.ndarray:
        """The first valid start at or after each of ``idx`` (wrapping around)."""
        valid = np.flatnonzero(self.valid)
        return valid[np.searchsorted(valid, idx) % valid.size]

    def update_priorities(self, idx: np.ndarray, priorities: np.ndarray) -> None:
        """p_i = priorities + eps for the sampled starts (no effect on uniform sampling)."""
        if not self.prioritized:
            return
        idx = np.asarray(idx, dtype=np.int64)
        p = np.asarray(priorities, dtype=np.float64) + self.eps
        self.priority[idx] = p
        self._set_leaves(np.unique(idx))

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"valid": self.valid.copy(), "priority": self.priority.copy(), "ep_index": self.ep_index.copy(),
                "seen": self.seen, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.valid[:] = state["valid"]
        self.priority[:] = state["priority"]
        self.ep_index[:] = state["ep_index"]
        self.seen = int(state["seen"])  # an older checkpoint's "max_priority" (the largest ever seen) is unused
        self.rng.bit_generator.state = state["rng"]
        self._rebuild_trees()
