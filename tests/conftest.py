"""Shared test machinery: the crash-and-resume check every algorithm's exact-resume test runs, and a replay
buffer of random transitions."""
import csv

import numpy as np
import pytest

from modelrl.runner.train import train


class Crash(Exception):
    """Raised from the loop's on_step hook to simulate a killed run."""


def random_buffer(env, steps, capacity=10_000, seed=0):
    """A ReplayBuffer of ``steps`` transitions of uniform random actions in ``env`` (episodes reset as they end)."""
    from modelrl.data.buffer import ReplayBuffer

    buf = ReplayBuffer(env.observation_space.shape[0], env.action_space.shape[0], capacity, seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nobs, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nobs, te, tr)
        obs = nobs if not (te or tr) else env.reset()[0]
    return buf


def metrics_rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _without_timing(rows: list[dict]) -> list[dict]:
    """Wall-clock columns differ between any two runs; everything else must not."""
    return [{k: v for k, v in r.items() if not (k.endswith(("wall_s", "cpu_s")) or k.startswith("time_"))}
            for r in rows]


@pytest.fixture
def crash_and_resume(tmp_path):
    """``run(cfg, overrides, crash_at)``: train uninterrupted into tmp/full; train again into tmp/crashed,
    killed at env step ``crash_at``, then resumed. Returns (full run dir, full rows, env steps logged before
    the crash, resumed rows), the rows without timing columns."""

    def run(cfg, overrides, crash_at):
        _, full = train(cfg, overrides=overrides, out=tmp_path / "full", progress=False)

        def crash(step):
            if step == crash_at:
                raise Crash

        with pytest.raises(Crash):
            train(cfg, overrides=overrides, out=tmp_path / "crashed", progress=False, on_step=crash)
        before = [r["env_step"] for r in metrics_rows(tmp_path / "crashed")]
        train(cfg, resume=tmp_path / "crashed", progress=False)
        return full, _without_timing(metrics_rows(full)), before, _without_timing(metrics_rows(tmp_path / "crashed"))

    return run
