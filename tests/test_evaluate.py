"""Rendering for `modelrl eval --video`: our cart-pole's numpy drawing, MuJoCo and DeepMind Control offscreen."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from modelrl.envs import make_env
from modelrl.runner.evaluate import run_episode, write_video


def test_cartpole_swingup_renders_and_writes_mp4_and_gif(tmp_path):
    import imageio.v2 as imageio

    env = make_env("CartPoleSwingUp-v0", seed=0, render_mode="rgb_array")
    rng = np.random.default_rng(0)
    _, steps, frames = run_episode(env, lambda o: rng.uniform(-1, 1, 1), seed=3, render=True, max_steps=12)
    assert steps == 12 and len(frames) == 13 and frames[0].shape == (160, 320, 3)
    assert frames[0].dtype == np.uint8 and (frames[0] != 255).any()  # track, cart and pole drawn
    written = write_video(frames, tmp_path / "videos" / "cp", fps=20)
    assert [p.name for p in written] == ["cp.mp4", "cp.gif"]
    assert len(imageio.mimread(written[0])) == 13


def test_no_frames_without_render_mode():
    env = make_env("CartPoleSwingUp-v0", seed=0)
    env.reset()
    assert env.render() is None


MUJOCO_SCRIPT = """
import json, numpy as np
from modelrl.runner.evaluate import configure_offscreen_gl, run_episode
backend = configure_offscreen_gl()
from modelrl.envs import make_env
out = {"backend": backend}
for env_id in ("InvertedPendulum-v5", "dmc:cartpole-swingup"):
    env = make_env(env_id, seed=0, render_mode="rgb_array")
    _, _, frames = run_episode(env, lambda o: np.zeros(env.action_space.shape), seed=0, render=True, max_steps=2)
    env.close()
    out[env_id] = [list(frames[-1].shape), float(frames[-1].std())]
print(json.dumps(out))
"""


EGL_PROBE = "from mujoco.egl import GLContext; c = GLContext(64, 64); c.make_current(); c.free()"


def test_mujoco_and_dm_control_render_offscreen():
    """A fresh process, as `modelrl eval --video` is: MUJOCO_GL must be chosen before MuJoCo loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    probe = subprocess.run([sys.executable, "-c", EGL_PROBE],
                           env={**env, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"},
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:  # system libraries, not ours: `make video` installs them (libegl1, libegl-mesa0)
        pytest.skip("EGL offscreen rendering is not available on this machine: " + probe.stderr[-300:])
    res = subprocess.run([sys.executable, "-c", MUJOCO_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "egl"
    assert out["InvertedPendulum-v5"][0] == [480, 480, 3] and out["InvertedPendulum-v5"][1] > 10
    assert out["dmc:cartpole-swingup"][0] == [240, 320, 3] and out["dmc:cartpole-swingup"][1] > 10
