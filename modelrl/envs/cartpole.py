"""Continuous cart-pole swing-up: a Gymnasium env and its exact torch twin.

The equations are the frictionless cart-pole of Florian (2007), "Correct equations for the
dynamics of the cart-pole system", integrated with semi-implicit Euler. The maths lives once,
in ``_integrate`` and ``_reward``, written only with arithmetic operators plus the ``sin``,
``cos`` and ``exp`` passed in, so the env runs it on Python floats (fast, float64) and
``CartPoleSwingUpDynamics`` runs it on batched torch tensors; both give the same numbers.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from modelrl.envs.true_dynamics import register_true_dynamics

ENV_ID = "CartPoleSwingUp-v0"


@dataclass(frozen=True)
class CartPoleParams:
    """Physical constants and timing; change them to model a mismatched 'real' system."""

    cart_mass: float = 1.0  # m_c [kg]
    pole_mass: float = 0.1  # m_p [kg]
    half_length: float = 0.5  # l, pivot to the pole's centre of mass [m]
    gravity: float = 9.8  # g [m/s^2]
    max_force: float = 10.0  # F = max_force * u, u in [-1, 1] [N]
    dt: float = 0.05  # control step [s]
    substeps: int = 5  # Euler substeps per control step (0.01 s each)
    max_steps: int = 200  # truncation: 200 steps = 10 s
    reset_noise: float = 0.05  # uniform noise half-width on every state entry at reset


def _integrate(x, x_dot, theta, theta_dot, force, p: CartPoleParams, sin: Callable, cos: Callable):
    """Advance (x, x_dot, theta, theta_dot) by one control step under a constant force.

    theta = 0 is upright. Frictionless Florian (2007) accelerations, semi-implicit Euler:
    velocities are updated first and the positions use the new velocities.
    """
    total_mass = p.cart_mass + p.pole_mass
    pole_ml = p.pole_mass * p.half_length
    h = p.dt / p.substeps
    for _ in range(p.substeps):
        s, c = sin(theta), cos(theta)
        temp = (force + pole_ml * theta_dot * theta_dot * s) / total_mass
        theta_acc = (p.gravity * s - c * temp) / (
            p.half_length * (4.0 / 3.0 - p.pole_mass * c * c / total_mass)
        )
        x_acc = temp - pole_ml * theta_acc * c / total_mass
        x_dot = x_dot + h * x_acc
        x = x + h * x_dot
        theta_dot = theta_dot + h * theta_acc
        theta = theta + h * theta_dot
    return x, x_dot, theta, theta_dot


def _reward(x, cos_theta, theta_dot, u, exp: Callable):
    """Smooth reward in [0, 1] on the state after the step and the (clipped) action u."""
    upright = (1.0 + cos_theta) / 2.0
    centered = (1.0 + exp(-x * x)) / 2.0
    small_control = (4.0 + (1.0 - u * u)) / 5.0
    small_velocity = (1.0 + exp(-0.1 * theta_dot * theta_dot)) / 2.0
    return upright * centered * small_control * small_velocity


class CartPoleSwingUpEnv(gymnasium.Env):
    """Swing a pole up from hanging down and balance it by pushing the cart; never terminates.

    Observation (float32, 5): x, x_dot, cos(theta), sin(theta), theta_dot, with theta = 0
    upright. Action (1,) in [-1, 1], clipped, times ``max_force`` newtons. Truncated after
    ``max_steps`` steps. The internal state ``self.state`` is (x, x_dot, theta, theta_dot)
    in float64.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, params: CartPoleParams | None = None, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.params = params or CartPoleParams()
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.params.dt))}
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        high = np.array([np.inf, np.inf, 1.0, 1.0, np.inf], dtype=np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.state = np.array([0.0, 0.0, math.pi, 0.0])
        self._steps = 0

    def _obs(self) -> np.ndarray:
        x, x_dot, theta, theta_dot = self.state
        return np.array([x, x_dot, math.cos(theta), math.sin(theta), theta_dot], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Pole hanging down (theta = pi) at rest, plus uniform noise on every state entry."""
        super().reset(seed=seed)
        noise = self.np_random.uniform(-self.params.reset_noise, self.params.reset_noise, size=4)
        self.state = np.array([0.0, 0.0, math.pi, 0.0]) + noise
        self._steps = 0
        return self._obs(), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One control step (``substeps`` Euler substeps); reward on the new state."""
        u = min(max(float(np.asarray(action, dtype=np.float64).reshape(-1)[0]), -1.0), 1.0)
        p = self.params
        x, x_dot, theta, theta_dot = (float(v) for v in self.state)
        x, x_dot, theta, theta_dot = _integrate(
            x, x_dot, theta, theta_dot, p.max_force * u, p, math.sin, math.cos
        )
        self.state = np.array([x, x_dot, theta, theta_dot])
        self._steps += 1
        reward = _reward(x, math.cos(theta), theta_dot, u, math.exp)
        truncated = self._steps >= p.max_steps
        return self._obs(), float(reward), False, truncated, {}

    def render(self, height: int = 160, width: int = 320) -> np.ndarray | None:
        """A small RGB drawing (track, cart, pole) centred on the origin; 4.8 m of track shown."""
        if self.render_mode != "rgb_array":
            return None
        img = np.full((height, width, 3), 255, dtype=np.uint8)
        scale = width / 4.8
        x, _, theta, _ = self.state
        track_y = int(height * 0.7)
        img[track_y, :] = 0
        cx = width / 2 + x * scale
        cart_w, cart_h = int(0.5 * scale), int(0.25 * scale)
        rows = slice(max(track_y - cart_h // 2, 0), min(track_y + cart_h // 2, height))
        cols = slice(max(int(cx) - cart_w // 2, 0), max(min(int(cx) + cart_w // 2, width), 0))
        img[rows, cols] = (40, 40, 160)
        length = 2 * self.params.half_length * scale
        t = np.linspace(0.0, 1.0, 200)
        px = (cx + t * length * math.sin(theta)).astype(int)
        py = (track_y - t * length * math.cos(theta)).astype(int)
        for dx in (-1, 0, 1):
            ok = (px + dx >= 0) & (px + dx < width) & (py >= 0) & (py < height)
            img[py[ok], px[ok] + dx] = (200, 120, 40)
        return img


class CartPoleSwingUpDynamics:
    """Batched torch model of ``CartPoleSwingUp-v0``, the same maths as the env.

    State = the env's 5-d observation (x, x_dot, cos, sin, theta_dot); action normalised to
    [-1, 1] and clamped, as the env clips. Runs in the dtype and device of ``state``.
    """

    state_dim = 5
    action_dim = 1

    def __init__(self, params: CartPoleParams | None = None) -> None:
        self.params = params or CartPoleParams()
        self.dt = self.params.dt

    def step(self, state: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        x, x_dot, cos_th, sin_th, theta_dot = state.unbind(-1)
        u = action[..., 0].to(state.dtype).clamp(-1.0, 1.0)
        theta = torch.atan2(sin_th, cos_th)
        x, x_dot, theta, theta_dot = _integrate(
            x, x_dot, theta, theta_dot, self.params.max_force * u, self.params, torch.sin, torch.cos
        )
        cos_new = torch.cos(theta)
        reward = _reward(x, cos_new, theta_dot, u, torch.exp)
        # feature-first then transposed: the next step's unbind yields contiguous columns (faster)
        return torch.stack([x, x_dot, cos_new, torch.sin(theta), theta_dot], dim=0).T, reward


if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="modelrl.envs.cartpole:CartPoleSwingUpEnv",
        max_episode_steps=CartPoleParams.max_steps,
    )
register_true_dynamics(ENV_ID, CartPoleSwingUpDynamics)
