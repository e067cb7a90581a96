"""Environments: ``make_env`` for Gymnasium and DeepMind Control ids, and known torch dynamics."""
from modelrl.envs.cartpole import CartPoleSwingUpDynamics, CartPoleSwingUpEnv
from modelrl.envs.make import make_env
from modelrl.envs.rewards import can_terminate
from modelrl.envs.true_dynamics import LinearDynamics, PendulumDynamics, register_true_dynamics, true_dynamics

__all__ = [
    "make_env",
    "can_terminate",
    "true_dynamics",
    "register_true_dynamics",
    "PendulumDynamics",
    "LinearDynamics",
    "CartPoleSwingUpEnv",
    "CartPoleSwingUpDynamics",
]
