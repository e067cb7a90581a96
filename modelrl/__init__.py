"""modelrl: model-based reinforcement learning, MPC and planning in one library."""
from modelrl.envs import make_env, true_dynamics
from modelrl.types import Dynamics

__version__ = "0.1.0"


def load_run(run_dir, device: str | None = None):
    """The trained agent of a run directory (restored from its last checkpoint) and the run's saved config.

    Its trained parts are attributes: an MPC agent's ``dynamics`` (the learned model) and ``planner``, MBPO's
    ``model`` and ``sac``, TD-MPC's ``model`` (TOLD), an imitation agent's ``policy``; ``agent.act(obs)`` acts.
    ``device`` (default ``auto``) need not be the one it trained on."""
    from modelrl.runner.rundir import load_agent

    return load_agent(run_dir, device)


__all__ = ["make_env", "true_dynamics", "load_run", "Dynamics", "__version__"]
