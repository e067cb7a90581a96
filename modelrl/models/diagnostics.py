"""Model diagnostics: one-step and open-loop k-step prediction error on held-out transitions.

These compute numbers only; plots and the command line live in the runner and CLI.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from modelrl.models.ensemble import EnsembleModel
from modelrl.types import Dynamics, as_tensor

Episode = tuple[np.ndarray, np.ndarray]  # (obs[T+1, S], actions[T, A])


def _step_fn(model: EnsembleModel | Dynamics) -> Callable[[Tensor, Tensor], Tensor]:
    """Next-observation function: an ``EnsembleModel`` predicts with its elites' mean; any
    other ``Dynamics`` (learned, true) steps as a planner would see it."""
    if isinstance(model, EnsembleModel):
        return lambda s, a: model.predict(s, a).next_obs
    if not callable(getattr(model, "step", None)):
        raise TypeError(f"expected an EnsembleModel or a Dynamics with step(), got {type(model).__name__}")
    return lambda s, a: model.step(s, a)[0]


def _device(model) -> torch.device:
    inner = model if isinstance(model, EnsembleModel) else getattr(model, "model", None)
    return inner.device if isinstance(inner, EnsembleModel) else torch.device("cpu")


@torch.no_grad()
def one_step_error(model: EnsembleModel | Dynamics, obs, action, next_obs, chunk: int = 65536) -> dict:
    """One-step prediction error in real units: ``mse`` (over rows and dims), ``rmse_per_dim[S]``,
    ``mse_per_dim[S]``, and ``normalized_mse``, the MSE divided by the variance of ``s' - s``
    per dimension and averaged (1.0 = no better than predicting the mean change)."""
    step, dev = _step_fn(model), _device(model)
    obs, action, next_obs = (as_tensor(v, device=dev) for v in (obs, action, next_obs))
    if obs.ndim != 2 or next_obs.shape != obs.shape or action.ndim != 2 or action.shape[0] != obs.shape[0]:
        raise ValueError(
            f"need obs[N, S], action[N, A], next_obs[N, S]; got {tuple(obs.shape)}, {tuple(action.shape)}, "
            f"{tuple(next_obs.shape)}"
        )
    pred = torch.cat([step(obs[i:i + chunk], action[i:i + chunk]) for i in range(0, obs.shape[0], chunk)])
    sq = ((pred - next_obs) ** 2).to(torch.float64)
    mse_dim = sq.mean(0)
    var = (next_obs - obs).to(torch.float64).var(0, correction=0).clamp_min(1e-12)
    return {
        "mse": float(mse_dim.mean()),
        "mse_per_dim": mse_dim.cpu().numpy(),
        "rmse_per_dim": mse_dim.sqrt().cpu().numpy(),
        "normalized_mse": float((mse_dim / var).mean()),
    }


@torch.no_grad()
def predicted_trajectory(model: EnsembleModel | Dynamics, obs0, actions) -> np.ndarray:
    """Open-loop rollout from ``obs0[S]`` under ``actions[T, A]``: ``obs[T+1, S]`` (row 0 = obs0)."""
    step, dev = _step_fn(model), _device(model)
    s = as_tensor(obs0, device=dev).reshape(1, -1)
    acts = as_tensor(actions, device=dev)
    out = [s]
    for t in range(acts.shape[0]):
        s = step(s, acts[t:t + 1])
        out.append(s)
    return torch.cat(out).cpu().numpy()


def episodes_from_arrays(obs, action, next_obs, episode_start) -> list[Episode]:
    """Split time-ordered transition arrays into ``(obs[T+1, S], actions[T, A])`` episodes.

    A new episode begins at each ``episode_start`` row and wherever ``next_obs[t]`` differs from
    ``obs[t + 1]`` (a gap in the data, e.g. the oldest, overwritten part of a ring buffer).
    """
    obs, action, next_obs = (np.asarray(v, dtype=np.float32) for v in (obs, action, next_obs))
    start = np.asarray(episode_start, dtype=bool).copy()
    if len(obs) == 0:
        return []
    start[0] = True
    start[1:] |= np.any(next_obs[:-1] != obs[1:], axis=1)
    bounds = np.append(np.flatnonzero(start), len(obs))
    return [
        (np.concatenate([obs[a:b], next_obs[b - 1:b]]), action[a:b])
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def episodes_from_buffer(buffer) -> list[Episode]:
    """The episodes stored in a ``modelrl.data.ReplayBuffer``, oldest first."""
    data = buffer.all()
    n = len(buffer)
    idx = np.arange(n) if n < buffer.capacity else (np.arange(buffer.capacity) + buffer.pos) % buffer.capacity
    return episodes_from_arrays(data["obs"], data["action"], data["next_obs"], buffer.episode_start[idx])


@torch.no_grad()
def k_step_error(
    model: EnsembleModel | Dynamics,
    episodes: Sequence[Episode],
    k: int,
    max_starts: int | None = None,
    seed: int | None = 0,
) -> np.ndarray:
    """Open-loop prediction error ``[k]``: entry j-1 is the MSE (over dims, averaged over start
    points) of the model's j-step prediction from each start ``obs[t]`` under ``actions[t:t+j]``.

    Every t with ``t + k <= T`` in every episode is a start point (all rolled out together);
    ``max_starts`` keeps a random subset of them (drawn with ``seed``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    step, dev = _step_fn(model), _device(model)
    windows_obs, windows_act = [], []
    for ep_obs, ep_act in episodes:
        ep_obs, ep_act = np.asarray(ep_obs, dtype=np.float32), np.asarray(ep_act, dtype=np.float32)
        if ep_obs.shape[0] != ep_act.shape[0] + 1:
            raise ValueError(f"an episode needs obs[T+1, S] and actions[T, A]; got {ep_obs.shape} and {ep_act.shape}")
        if ep_act.shape[0] < k:
            continue
        o = np.lib.stride_tricks.sliding_window_view(ep_obs, k + 1, axis=0)  # [W, S, k+1]
        a = np.lib.stride_tricks.sliding_window_view(ep_act, k, axis=0)  # [W, A, k]
        windows_obs.append(o.transpose(0, 2, 1))
        windows_act.append(a.transpose(0, 2, 1))
    if not windows_obs:
        raise ValueError(f"no episode has at least k = {k} transitions")
    obs_w, act_w = np.concatenate(windows_obs), np.concatenate(windows_act)  # [W, k+1, S], [W, k, A]
    if max_starts is not None and obs_w.shape[0] > max_starts:
        pick = np.random.default_rng(seed).choice(obs_w.shape[0], size=max_starts, replace=False)
        obs_w, act_w = obs_w[pick], act_w[pick]
    obs_t, act_t = as_tensor(obs_w, device=dev), as_tensor(act_w, device=dev)
    s = obs_t[:, 0]
    errors = np.empty(k)
    for j in range(k):
        s = step(s, act_t[:, j])
        errors[j] = float(((s - obs_t[:, j + 1]) ** 2).to(torch.float64).mean())
    return errors
