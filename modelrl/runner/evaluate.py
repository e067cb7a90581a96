"""``modelrl eval RUN``: a trained agent's returns on fresh episodes, and videos of them.

Restores the agent from the run's last checkpoint (``load_agent``), runs ``episodes`` episodes
with its evaluation action (episode i resets with seed ``seed + i``) and writes ``eval.json``.
With ``video``, the first ``video_episodes`` episodes are rendered (``render_mode="rgb_array"``)
to ``videos/episode_<i>.mp4`` (needs imageio-ffmpeg) and ``.gif``, plus one frame as PNG.

MuJoCo tasks render offscreen through EGL or OSMesa: without a display, ``MUJOCO_GL`` defaults
to ``egl`` here (set ``MUJOCO_GL=osmesa`` where EGL is missing; ``make video`` installs the system
libraries). Pendulum-v1 draws with pygame, our CartPoleSwingUp-v0 with numpy.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelrl.runner.rundir import atomic_write_text, read_run_config
from modelrl.types import NonFiniteError

GIF_MAX_WIDTH = 320  # GIFs are for a quick look in a browser or a README: small and light
GIF_MAX_FPS = 25


def configure_offscreen_gl() -> str | None:
    """Offscreen rendering without a display: MuJoCo through ``egl``, pygame through SDL's dummy driver.

    Call before MuJoCo is imported. Respects variables the user set. Returns MuJoCo's back end
    (None: MuJoCo's default, GLFW, which needs a display).
    """
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (Pendulum-v1) draws offscreen too
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    backend = os.environ.get("MUJOCO_GL")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def eval_reset_seed(seed: int, i: int) -> int:
    """The reset seed of evaluation episode ``i`` of a run with ``seed``, during training (``runner.train.evaluate``)
    and in the benchmarks that evaluate like it: far from the training env's seeds, fixed, so every evaluation of a
    run starts from the same states."""
    return 10_000 + 1000 * seed + i


def run_episode(env, policy: Callable[[np.ndarray], np.ndarray], seed: int, render: bool = False,
                max_steps: int | None = None) -> tuple[float, int, list[np.ndarray]]:
    """One episode from ``env.reset(seed=seed)``; returns (return, steps, RGB frames if ``render``)."""
    obs, _ = env.reset(seed=seed)
    frames = [_frame(env)] if render else []
    total, steps, done = 0.0, 0, False
    while not done and (max_steps is None or steps < max_steps):
        obs, reward, terminated, truncated, _ = env.step(_finite(policy(obs), steps))
        total += float(reward)
        steps += 1
        done = terminated or truncated
        if render:
            frames.append(_frame(env))
    return total, steps, frames


def run_episodes(agent, envs: list, seeds: list[int], render: int = 0, max_steps: int | None = None,
                 lockstep: bool = True) -> tuple[list[float], list[int], list[list[np.ndarray]]]:
    """Episode i on ``envs[i]`` from ``reset(seed=seeds[i])`` with the agent's evaluation action.

    ``lockstep``: the K episodes advance together, one ``agent.act_batch(obs[B, S])`` per step for the
    B still running (one batched plan for all of them); when episodes end, ``agent.keep_rows`` drops
    their rows, warm starts included, so finished episodes cost nothing more. Agents without
    ``act_batch`` (and ``lockstep=False``) run the episodes one after another. Frames of the first
    ``render`` episodes are returned. Returns (returns, lengths, frames per episode).
    """
    k = len(envs)
    batch_act = getattr(agent, "act_batch", None)
    if lockstep and k > 1 and batch_act is not None:
        obs = np.stack([env.reset(seed=sd)[0] for env, sd in zip(envs, seeds)])
        frames = [[_frame(envs[i])] if i < render else [] for i in range(k)]
        agent.reset()
        totals, lengths = np.zeros(k), np.zeros(k, dtype=int)
        running = np.arange(k)  # the episodes still running, in the agent's row order
        try:
            actions = batch_act(obs, deterministic=True)
        except NotImplementedError:
            actions = None
        if actions is not None:
            while running.size:
                _finite(actions, int(lengths[running].max()))
                done = np.zeros(running.size, dtype=bool)
                for row, i in enumerate(running):
                    o, r, term, trunc, _ = envs[i].step(actions[row])
                    obs[i] = o
                    totals[i] += float(r)
                    lengths[i] += 1
                    if i < render:
                        frames[i].append(_frame(envs[i]))
                    done[row] = term or trunc or (max_steps is not None and lengths[i] >= max_steps)
                if done.any():
                    running = running[~done]
                    if running.size:
                        agent.keep_rows(np.flatnonzero(~done))
                if running.size:
                    actions = batch_act(obs[running], deterministic=True)
            return totals.tolist(), lengths.tolist(), frames
    out = []
    for ep, (env, sd) in enumerate(zip(envs, seeds)):
        agent.reset()
        out.append(run_episode(env, lambda o: agent.act(o, deterministic=True), sd, ep < render, max_steps))
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def _finite(action: np.ndarray, steps: int) -> np.ndarray:
    """``action`` if every entry is finite; else ``NonFiniteError`` (a NaN action would reach the env and come back
    as a NaN observation, blamed on the env)."""
    if not np.all(np.isfinite(action)):
        raise NonFiniteError(f"the agent's evaluation action at step {steps + 1} of an episode is not finite "
                             f"({np.asarray(action).tolist()})", what="action")
    return action


def _frame(env) -> np.ndarray:
    import gymnasium

    try:
        frame = env.render()
    except (ImportError, gymnasium.error.DependencyNotInstalled) as err:
        raise RuntimeError(f"rendering needs a package that is missing ({err}); "
                           f"pip install 'modelrl[video]' installs pygame and imageio-ffmpeg") from err
    except Exception as err:  # noqa: BLE001 (GL back ends raise many kinds; all mean the same here)
        raise RuntimeError(
            f"rendering failed ({type(err).__name__}: {err}). MuJoCo tasks need an offscreen GL back end: "
            f"MUJOCO_GL=egl (libegl1) or MUJOCO_GL=osmesa (libosmesa6); `make video` installs them. "
            f"MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r} now.") from err
    if frame is None:
        raise RuntimeError("the environment returned no frame; it must support render_mode='rgb_array'")
    return np.asarray(frame, dtype=np.uint8)


def write_video(frames: list[np.ndarray], path_stem: Path, fps: int) -> list[Path]:
    """Write ``frames`` as ``<stem>.mp4`` (when imageio-ffmpeg is installed) and ``<stem>.gif``."""
    import imageio.v2 as imageio

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        import warnings

        warnings.warn("imageio-ffmpeg is not installed: writing the GIF only "
                      "(pip install 'modelrl[video]' for MP4)", stacklevel=2)
    else:
        mp4 = path_stem.with_suffix(".mp4")
        # even sizes for H.264; macro_block_size=1 keeps the frame as it is when it already is
        frames_even: list[npt.ArrayLike] = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
        imageio.mimwrite(mp4, frames_even, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                         ffmpeg_log_level="error")
        written.append(mp4)
    gif = path_stem.with_suffix(".gif")
    step = max(1, int(np.ceil(fps / GIF_MAX_FPS)))
    small: list[npt.ArrayLike] = [_shrink(f, GIF_MAX_WIDTH) for f in frames[::step]]
    imageio.mimwrite(gif, small, duration=1000.0 * step / fps, loop=0)
    written.append(gif)
    return written


def _shrink(frame: np.ndarray, max_width: int) -> np.ndarray:
    """Downsample by an integer factor (nearest pixel) so the width is at most ``max_width``."""
    factor = int(np.ceil(frame.shape[1] / max_width))
    return frame[::factor, ::factor] if factor > 1 else frame


def evaluate_run(
    run_dir: str | Path,
    episodes: int = 10,
    seed: int = 0,
    video: bool = False,
    video_episodes: int = 1,
    max_steps: int | None = None,
    fps: int | None = None,
    threads: int | None = 1,
    device: str | None = None,
    lockstep: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's agent; writes ``eval.json`` (and videos) into the run directory and returns the result.

    The episodes run in lockstep (one batched action per step for all of them) unless ``lockstep`` is
    False; ``device`` places the agent (default: the run's own setting, ``auto`` for older runs).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if video and video_episodes < 1:
        raise ValueError(f"video_episodes must be >= 1, got {video_episodes}")
    run_dir = Path(run_dir)
    read_run_config(run_dir)  # not a run, a planning run, a broken config.yaml: one clear line before anything runs
    if video:
        configure_offscreen_gl()
    import torch

    from modelrl.envs import make_env
    from modelrl.runner.rundir import load_agent

    if threads is not None:
        torch.set_num_threads(threads)  # as in training: small batched planning ops run fastest on one thread
    agent, saved = load_agent(run_dir, device=device)
    train = saved["train"]
    repeat = int(train.get("action_repeat", 1))
    env = make_env(train["env"], seed=seed, action_repeat=repeat, render_mode="rgb_array" if video else None)
    fps = fps or max(1, round((env.metadata.get("render_fps") or 30) / repeat))  # one frame per agent step: real time
    # lockstep: one env per episode, rendering only in those whose episodes make videos (a GL context each)
    envs = [env] + [make_env(train["env"], seed=seed, action_repeat=repeat,
                             render_mode="rgb_array" if video and i < video_episodes else None)
                    for i in range(1, episodes)] if lockstep else [env] * episodes
    videos: list[str] = []
    t0 = time.perf_counter()
    try:
        returns, lengths, frames = run_episodes(agent, envs, [seed + i for i in range(episodes)],
                                                render=video_episodes if video else 0, max_steps=max_steps,
                                                lockstep=lockstep)
        for i, ep_frames in enumerate(frames):
            if not ep_frames:
                continue
            stem = run_dir / "videos" / f"episode_{i}"
            videos += [str(p) for p in write_video(ep_frames, stem, fps)]
            frame_png = stem.parent / f"episode_{i}_frame.png"
            import imageio.v2 as imageio

            imageio.imwrite(frame_png, ep_frames[len(ep_frames) // 2])
            videos.append(str(frame_png))
    finally:
        for e in {id(x): x for x in envs}.values():
            e.close()  # frees the GL contexts now, not in a destructor at interpreter exit
    result = {
        "run": str(run_dir), "algo": train["algo"], "env": train["env"], "episodes": episodes, "seed": seed,
        "reset_seeds": [seed + i for i in range(episodes)], "returns": returns, "lengths": lengths,
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
        "seconds": round(time.perf_counter() - t0, 3), "videos": videos,
    }
    atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2))
    return result
