"""A minimal Gymnasium adapter for DeepMind Control suite tasks ("dmc:<domain>-<task>").

dm_control is imported lazily (inside functions) so ``import modelrl`` stays fast.
"""
from __future__ import annotations

import warnings
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from modelrl.types import did_you_mean

DMC_PREFIX = "dmc:"
# Short domain names accepted beside the suite's own, as the TD-MPC code and results files spell them
# (nicklashansen/tdmpc src/env.py maps "cup" to "ball_in_cup"; its results/cup-catch.csv).
DOMAIN_ALIASES = {"cup": "ball_in_cup"}


def _suite():
    """Import ``dm_control.suite`` on first use, without GLFW's warning on headless machines."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
        from dm_control import suite
    return suite


def dmc_task_ids() -> list[str]:
    """Every suite task as a ``dmc:<domain>-<task>`` id (sorted)."""
    suite = _suite()

    return sorted(f"{DMC_PREFIX}{d}-{t}" for d, t in suite.ALL_TASKS)


def parse_dmc_id(env_id: str) -> tuple[str, str]:
    """Split ``dmc:<domain>-<task>`` into (domain, task) by lookup in ``suite.ALL_TASKS``.

    Looking the id up, rather than splitting on a character, handles underscores in both
    parts ("dmc:ball_in_cup-catch", "dmc:finger-turn_easy"); "dmc:cup-catch" is accepted as TD-MPC spells it.
    Unknown ids raise a ValueError that lists close matches, and the domain's tasks when the domain is known.
    """
    suite = _suite()
    name = env_id[len(DMC_PREFIX):] if env_id.startswith(DMC_PREFIX) else env_id
    table = {f"{d}-{t}": (d, t) for d, t in suite.ALL_TASKS}
    table.update({f"{alias}-{t}": (d, t) for alias, d in DOMAIN_ALIASES.items() for t in suite.TASKS_BY_DOMAIN[d]})
    if name in table:
        return table[name]
    hint = did_you_mean(f"{DMC_PREFIX}{name}", dmc_task_ids(), n=5, cutoff=0.5).strip() or \
        "See dm_control.suite.ALL_TASKS."
    domain = name.rsplit("-", 1)[0]
    if domain in suite.TASKS_BY_DOMAIN:
        tasks = ", ".join(suite.TASKS_BY_DOMAIN[domain])
        hint += f" Tasks of domain {domain!r}: {tasks}."
    raise ValueError(f"Unknown DeepMind Control task {env_id!r}. {hint}")


def _flat_size(spec: Any) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) if spec.shape else 1


class DMCEnv(gymnasium.Env):
    """A dm_control suite task as a Gymnasium env with a flat float32 observation.

    Observation entries are concatenated in the task's observation-spec order (``obs_keys``);
    scalars become length 1. The episode ends on dm_env's LAST step: ``terminated`` when its
    discount is 0 (a true terminal state), ``truncated`` otherwise (the task's time limit,
    1000 steps for the suite). ``reset(seed=s)`` reseeds the task's random state in place.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    spec: gymnasium.envs.registration.EnvSpec  # always set (in __init__), where gymnasium.Env allows None

    def __init__(
        self,
        domain: str,
        task: str,
        seed: int | None = None,
        render_mode: str | None = None,
        height: int = 240,
        width: int = 320,
        camera_id: int = 0,
        environment_kwargs: dict[str, Any] | None = None,
    ) -> None:
        suite = _suite()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.domain, self.task = domain, task
        self.render_mode = render_mode
        self.height, self.width, self.camera_id = height, width, camera_id
        self._env = suite.load(domain, task, task_kwargs={"random": seed}, environment_kwargs=environment_kwargs)
        obs_spec = self._env.observation_spec()
        self.obs_keys: tuple[str, ...] = tuple(obs_spec.keys())
        dim = sum(_flat_size(s) for s in obs_spec.values())
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        act_spec = self._env.action_spec()
        self.action_space = spaces.Box(
            np.broadcast_to(act_spec.minimum, act_spec.shape).astype(np.float32),
            np.broadcast_to(act_spec.maximum, act_spec.shape).astype(np.float32),
            dtype=np.float32,
        )
        limit = getattr(self._env, "_step_limit", float("inf"))
        self.max_episode_steps: int | None = int(round(limit)) if np.isfinite(limit) else None
        control_dt = self._env.control_timestep()
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / control_dt))}
        self.spec = gymnasium.envs.registration.EnvSpec(
            id=f"{DMC_PREFIX}{domain}-{task}", entry_point=None, max_episode_steps=self.max_episode_steps
        )
        self._needs_reset = True

    @property
    def physics(self):
        """The task's MuJoCo physics (for rendering or reading the simulator state)."""
        return self._env.physics

    def _flatten(self, observation: dict[str, Any]) -> np.ndarray:
        return np.concatenate(
            [np.asarray(observation[k], dtype=np.float64).reshape(-1) for k in self.obs_keys]
        ).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        time_step = self._env.reset()
        self._needs_reset = False
        return self._flatten(time_step.observation), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{self.spec.id}: step() called after the episode ended; call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        time_step = self._env.step(action)
        reward = float(time_step.reward) if time_step.reward is not None else 0.0
        terminated = truncated = False
        if time_step.last():
            self._needs_reset = True
            terminated = time_step.discount == 0.0
            truncated = not terminated
        return self._flatten(time_step.observation), reward, terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        """An RGB frame from ``camera_id`` (needs a working MuJoCo GL backend, e.g. MUJOCO_GL=egl)."""
        if self.render_mode != "rgb_array":
            return None
        return self._env.physics.render(height=self.height, width=self.width, camera_id=self.camera_id)

    def close(self) -> None:
        self._env.close()
