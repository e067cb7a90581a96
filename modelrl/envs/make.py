"""``make_env``: one entry point for Gymnasium ids, DeepMind Control tasks and our own envs.

Every env it returns has actions in [-1, 1], flat float32 observations, optional action
repeat, a seed that the first ``reset()`` uses, and a check that observations and rewards stay
finite (and that a reward is one number).
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

import modelrl.envs.cartpole  # noqa: F401  (registers CartPoleSwingUp-v0 with gymnasium)
from modelrl.envs.dmc import DMC_PREFIX, DMCEnv, dmc_task_ids, parse_dmc_id
from modelrl.types import NonFiniteError, did_you_mean


class NonFiniteObservationError(NonFiniteError):
    """An environment produced an observation containing NaN or inf."""

    def __init__(self, message: str) -> None:
        super().__init__(message, what="observation")


class NonFiniteRewardError(NonFiniteError):
    """An environment returned a NaN or infinite reward."""

    def __init__(self, message: str) -> None:
        super().__init__(message, what="reward")


class EnvContractError(RuntimeError):
    """An environment broke the Gymnasium contract the run loop relies on (a reward that is not one number)."""


class NormalizeAction(gymnasium.ActionWrapper):
    """Expose a Box action space as [-1, 1]: clip to [-1, 1], then map affinely onto [low, high].

    The map is ``center + half_range * a``, so symmetric bounds are an exact scaling and
    [-1, 1] bounds are the identity (plus clipping).
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise ValueError(
                f"make_env supports continuous (Box) action spaces only; got {space}. "
                "Planners and the agents here act in [-1, 1]."
            )
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"Cannot normalise an unbounded action space {space} to [-1, 1]")
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        self._center = (high + low) / 2.0
        self._half = (high - low) / 2.0
        self._dtype = space.dtype
        self.action_space = spaces.Box(-1.0, 1.0, shape=space.shape, dtype=np.float32)

    def action(self, action: Any) -> np.ndarray:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self._center.shape), -1.0, 1.0)
        return (self._center + self._half * a).astype(self._dtype)


class FlattenFloat32Observation(gymnasium.ObservationWrapper):
    """Observations as flat float32 vectors; dict observations are concatenated in sorted key order."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            self._keys: tuple[str, ...] | None = tuple(sorted(space.spaces))
            parts = [space.spaces[k] for k in self._keys]
        elif isinstance(space, spaces.Box):
            self._keys = None
            parts = [space]
        else:
            raise ValueError(f"make_env supports Box or Dict-of-Box observations; got {space}")
        boxes = [p for p in parts if isinstance(p, spaces.Box)]
        if len(boxes) != len(parts):
            raise ValueError(f"make_env supports Box or Dict-of-Box observations; got {space}")
        low = np.concatenate([np.asarray(p.low, dtype=np.float32).reshape(-1) for p in boxes])
        high = np.concatenate([np.asarray(p.high, dtype=np.float32).reshape(-1) for p in boxes])
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        if self._keys is None:
            return np.asarray(observation, dtype=np.float32).reshape(-1)
        return np.concatenate(
            [np.asarray(observation[k], dtype=np.float32).reshape(-1) for k in self._keys]
        )


class CheckFinite(gymnasium.Wrapper):
    """Raise ``NonFiniteObservationError`` (``NonFiniteRewardError``) naming the env and step when an observation
    (a reward) is not finite, and ``EnvContractError`` when a reward is not one number (an array, None, text):
    stopped at the env's boundary, the fault is named where it arose, not inside a model fit steps later."""

    def __init__(self, env: gymnasium.Env, env_id: str) -> None:
        super().__init__(env)
        self._env_id = env_id
        self._t = 0

    def _check(self, obs: np.ndarray, where: str) -> None:
        if not np.all(np.isfinite(obs)):
            bad = np.flatnonzero(~np.isfinite(obs)).tolist()
            raise NonFiniteObservationError(
                f"{self._env_id}: non-finite observation {where} (entries {bad}): {obs}"
            )

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._t = 0
        self._check(obs, "at reset")
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        self._check(obs, f"at step {self._t} after reset")
        self._check_reward(reward)
        return obs, reward, terminated, truncated, info  # type: ignore[return-value]  # _check_reward: a number

    def _check_reward(self, reward: Any) -> None:
        number = isinstance(reward, (int, float, np.integer, np.floating)) and not isinstance(reward, bool)
        scalar = number or (isinstance(reward, np.ndarray) and reward.ndim == 0 and reward.dtype.kind in "iuf")
        if not scalar:
            shape = f" of shape {reward.shape}" if isinstance(reward, np.ndarray) else ""
            raise EnvContractError(
                f"{self._env_id}: step() returned a reward of type {type(reward).__name__}{shape} at step {self._t} "
                f"after reset ({reward!r}); a reward must be one number: return float(reward) from the env's step()")
        if not np.isfinite(reward):
            raise NonFiniteRewardError(
                f"{self._env_id}: non-finite reward {float(reward)} at step {self._t} after reset")


class ActionRepeat(gymnasium.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stop early when the episode ends. ``info["env_steps"]``
    is how many steps of the wrapped env the call took (``repeat``, or fewer at the end of an episode)."""

    def __init__(self, env: gymnasium.Env, repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for taken in range(1, self.repeat + 1):  # noqa: B007  # read after the loop: the steps this call took
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "env_steps": taken}


class SeedFirstReset(gymnasium.Wrapper):
    """Use ``seed`` for the first ``reset()`` called without one, and seed the action space."""

    def __init__(self, env: gymnasium.Env, seed: int | None) -> None:
        super().__init__(env)
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def _unknown_id_error(env_id: str) -> ValueError:
    candidates = list(gymnasium.registry.keys())
    try:
        candidates += dmc_task_ids()
    except ImportError:
        pass
    hint = did_you_mean(env_id, candidates, n=5, cutoff=0.6)
    return ValueError(
        f"Unknown environment id {env_id!r}.{hint} Use a Gymnasium id (e.g. 'Pendulum-v1') or "
        "'dmc:<domain>-<task>' (e.g. 'dmc:cartpole-swingup')."
    )


def _module_error(env_id: str, err: ModuleNotFoundError) -> ValueError:
    """``module:Id`` whose module (or a module it imports) cannot be found: say which, and where to put it."""
    module = env_id.split(":", 1)[0]
    cause = err.__cause__ if isinstance(err.__cause__, ModuleNotFoundError) else err  # gymnasium wraps the original
    missing = cause.name or module
    if missing.split(".")[0] == module.split(".")[0]:
        return ValueError(f"environment {env_id!r}: the module {module!r} could not be imported (no module named "
                          f"{missing!r}): put the folder that holds it on PYTHONPATH (PYTHONPATH=DIR modelrl ...) "
                          f"or install it")
    return ValueError(f"environment {env_id!r}: importing the module {module!r} failed because it needs "
                      f"{missing!r}, which is not installed")


def make_env(
    env_id: str,
    seed: int | None = None,
    action_repeat: int = 1,
    *,
    render_mode: str | None = None,
    **env_kwargs: Any,
) -> gymnasium.Env:
    """Build ``env_id`` with actions in [-1, 1] and flat float32 observations.

    ``env_id`` is a Gymnasium id ("Pendulum-v1", "CartPoleSwingUp-v0") or "dmc:<domain>-<task>".
    ``seed`` seeds the first reset and the action space; ``action_repeat`` repeats each action
    and sums the rewards. ``env_kwargs`` go to ``gymnasium.make`` (or ``DMCEnv``). Unknown ids
    raise a ValueError listing close matches.
    """
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
        raise ValueError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
    if env_id.startswith(DMC_PREFIX):
        domain, task = parse_dmc_id(env_id)
        env: gymnasium.Env = DMCEnv(domain, task, seed=seed, render_mode=render_mode, **env_kwargs)
    else:
        if env_id not in gymnasium.registry and ":" not in env_id:  # "module:Id" imports module first
            raise _unknown_id_error(env_id)
        if render_mode is not None:
            env_kwargs["render_mode"] = render_mode
        try:
            env = gymnasium.make(env_id, **env_kwargs)
        except ModuleNotFoundError as err:
            raise _module_error(env_id, err) from err
        except gymnasium.error.Error as err:  # "module:Id": the module was imported but registers no such id
            raise ValueError(f"environment {env_id!r}: {err}") from err
    env = NormalizeAction(env)
    env = FlattenFloat32Observation(env)
    env = CheckFinite(env, env_id)
    if action_repeat > 1:
        env = ActionRepeat(env, int(action_repeat))
    return SeedFirstReset(env, seed)

