"""modelrl: model-based reinforcement learning, MPC and planning in one library."""
from modelrl.envs import make_env, true_dynamics
from modelrl.types import Dynamics

__version__ = "0.1.0"
__all__ = ["make_env", "true_dynamics", "Dynamics", "__version__"]
