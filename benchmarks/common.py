"""Helpers shared by the benchmarks: machine description, results JSON, docs table sections."""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


def machine() -> dict:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def save_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # atomic: a crash mid-write never leaves half a file
    return path


def load_results(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def add_run(name: str, run: dict, key: tuple[str, ...], header: dict | None = None) -> dict:
    """Append ``run`` to ``runs`` in results/<name>.json, replacing one with the same ``key`` fields.

    The file is re-read under a lock, so several benchmark processes (e.g. one per seed) can
    append to the same file; returns the data as written."""
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_results(name)
        data.update(header or {})
        runs = [r for r in data.get("runs", []) if tuple(r.get(k) for k in key) != tuple(run.get(k) for k in key)]
        data["runs"] = runs + [run]
        save_results(name, data)
    return data


CURVE_EXTRAS = ("time_model_s", "time_rollout_s", "time_policy_s", "time_cpu_model_s", "time_cpu_rollout_s",
                "time_cpu_policy_s", "model_epochs")


def curve_from_run(run: Path) -> dict:
    """A run directory's metrics.csv as a curve: env steps, evaluation return (and std), training
    wall-clock and CPU seconds, and the agent's time split where it logs one."""
    import csv

    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    curve = {"step": [int(r["env_step"]) for r in rows], "return": [float(r["eval_return"]) for r in rows],
             "return_std": [float(r["eval_return_std"]) for r in rows],
             "train_s": [float(r["train_wall_s"]) for r in rows],
             "train_cpu_s": [float(r["train_cpu_s"]) for r in rows]}
    for key in CURVE_EXTRAS:
        if rows and rows[-1].get(key) not in (None, ""):
            curve[key] = [float(r[key]) if r.get(key) not in (None, "") else 0.0 for r in rows]
    return curve


def run_ours(algo: str, env_id: str, seed: int, steps: int, eval_every: int, episodes: int,
             overrides: dict | None = None, preset: str | None = None) -> dict:
    """Train through ``modelrl.runner.train``; returns the curve from metrics.csv."""
    from modelrl.runner.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(algo, env_id, steps, seed=seed, preset=preset, eval_every=eval_every,
                          eval_episodes=episodes, checkpoint_every=10 * steps)
        t0 = time.perf_counter()
        _, run = train(cfg, overrides=overrides or {}, out=Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
        curve = curve_from_run(run)
    curve["total_s"] = total
    return curve


def at(curve: dict, step: int) -> float | None:
    """The evaluation return at ``step`` (the first evaluation at or after it)."""
    for s, r in zip(curve["step"], curve["return"]):
        if s >= step:
            return r
    return None


def fmt(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return f"{np.mean(vals):.0f} ± {np.std(vals):.0f}" if len(vals) > 1 else f"{vals[0]:.0f}"


def per_1k(runs: list[dict], clock: str = "train_s") -> float | None:
    """Mean seconds per 1,000 env steps over ``runs`` by ``clock`` (None where a run lacks it)."""
    if not runs or any(clock not in r["curve"] for r in runs):
        return None
    return float(np.mean([r["curve"][clock][-1] / r["curve"]["step"][-1] * 1000 for r in runs]))


def align_runs(runs: list[dict]) -> tuple[list[int], list[list[int]]]:
    """Runs evaluate at slightly different steps (evaluations wait for an episode end). Align them on
    the evaluation steps of the run evaluated least often: returns, per grid point, the latest step
    used, and per run the index of its first evaluation at or after each grid point."""
    last = min(r["curve"]["step"][-1] for r in runs)
    grid = [g for g in min((r["curve"]["step"] for r in runs), key=len) if g <= last]
    idx = [[next(i for i, s in enumerate(r["curve"]["step"]) if s >= g) for g in grid] for r in runs]
    steps = [max(r["curve"]["step"][ix[j]] for r, ix in zip(runs, idx)) for j in range(len(grid))]
    return steps, idx


def common_args(p) -> None:
    """The arguments every learning benchmark takes (seeds, evaluation episodes, resume, report)."""
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=10, help="deterministic evaluation episodes per evaluation")
    p.add_argument("--resume", action="store_true", help="keep runs already in the results file")
    p.add_argument("--report", action="store_true", help="only rebuild tables and plots from the results file")


def write_docs_section(name: str, markdown: str) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` in docs/benchmarks.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_seed_group(axes, runs: list[dict], label: str, style: str = "-", alpha: float = 0.2,
                    clock: str = "train_s") -> None:
    """One curve per panel (env steps, training seconds by ``clock``): the mean over ``runs`` (each
    with ``curve`` = {step, return, <clock>}) and, with several seeds, their min-max band."""
    import numpy as np

    steps, idx = align_runs(runs)
    ret = np.array([[r["curve"]["return"][i] for i in ix] for r, ix in zip(runs, idx)])
    secs = np.array([[r["curve"][clock][i] for i in ix] for r, ix in zip(runs, idx)]).mean(0)
    label = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
    for ax, x in ((axes[0], steps), (axes[1], secs)):
        line, = ax.plot(x, ret.mean(0), style, label=label)
        if len(runs) > 1:
            ax.fill_between(x, ret.min(0), ret.max(0), color=line.get_color(), alpha=alpha)


def save_curves_figure(fig, axes, xlabels: tuple[str, str], ylabel: str, title: str, name: str,
                       legend_size: int | None = None) -> None:
    """Label the two panels (returns against env steps and against time), save docs/figures/<name>.png."""
    import matplotlib.pyplot as plt

    for ax, xlabel in zip(axes, xlabels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=legend_size)
    fig.suptitle(title)
    fig.tight_layout()
    (ROOT / "docs" / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(ROOT / "docs" / "figures" / f"{name}.png", dpi=110)
    plt.close(fig)
