"""Learning curves of training runs: ``modelrl plot RUN...`` and the plot every train run writes.

Runs are grouped by what they trained (algorithm, env, preset and every config field except the
seed), so the seeds of one setting become one line: the mean evaluation return, with a band
over seeds (min-max or one standard deviation). Two panels put environment steps and
wall-clock time on the x axis. Seeds evaluate at different steps (episode ends) and times, so
each curve is interpolated onto a common grid over the range all seeds of a group cover.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelrl.runner.rundir import ConfigError, read_metrics, read_run_config

XAxis = Literal["both", "steps", "wall"]
Band = Literal["minmax", "std", "none"]

# config fields that do not change what a run learns, so runs differing only in them are seeds of one setting
_NOT_A_SETTING = {"seed", "steps", "threads"}


@dataclasses.dataclass
class RunCurve:
    """One training run's evaluation curve and the config it was trained with."""

    path: Path
    train: dict[str, Any]
    agent: dict[str, Any]
    env_step: np.ndarray
    wall_s: np.ndarray
    eval_return: np.ndarray

    @property
    def setting(self) -> tuple:
        """Everything that identifies what was trained, without the seed."""
        items = [("train." + k, v) for k, v in self.train.items() if k not in _NOT_A_SETTING]
        items += [("agent." + k, v) for k, v in self.agent.items()]
        return tuple(sorted((k, repr(v)) for k, v in items))


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Training run directories among ``paths``: each path is a run, or a folder searched for runs."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"no such run directory: {p}")
        if _is_train_run(p, strict=True):
            found.append(p)
            continue
        inside = sorted(c.parent for c in p.rglob("config.yaml") if _is_train_run(c.parent))
        if not inside:
            raise FileNotFoundError(f"{p} holds no training run (a folder with config.yaml and metrics.csv "
                                    f"written by `modelrl train`)")
        found += inside
    return list(dict.fromkeys(found))


def _is_train_run(path: Path, strict: bool = False) -> bool:
    """A folder with a training run's config.yaml and a metrics.csv. A broken config.yaml is an error for a run
    named on the command line (``strict``); in a folder searched for runs, it is skipped with a warning."""
    if not ((path / "config.yaml").is_file() and (path / "metrics.csv").is_file()):
        return False
    try:
        read_run_config(path)
    except ConfigError as err:
        if strict:
            raise
        warnings.warn(f"skipped: {err}", stacklevel=3)
        return False
    except ValueError:  # a planning run
        return False
    return True


def load_run(path: str | Path) -> RunCurve:
    """Read a run's ``config.yaml`` and the evaluation rows of its ``metrics.csv`` (rows cut short left out)."""
    path = Path(path)
    saved = read_run_config(path)
    _, rows, _ = read_metrics(path / "metrics.csv")
    rows = [r for r in rows if r.get("eval_return") not in (None, "")]
    col = lambda name: np.array([float(r[name]) for r in rows], dtype=np.float64)  # noqa: E731
    return RunCurve(path, saved["train"], saved["agent"], col("env_step"), col("wall_s"), col("eval_return"))


def group_runs(runs: Sequence[RunCurve]) -> list[tuple[str, list[RunCurve]]]:
    """Runs grouped by setting (first-seen order), each with a label that tells the groups apart.

    The label is ``algo[/preset] on env``, plus ``field=value`` for the fields in which groups of
    the same algorithm, preset and env differ (what a sweep varies).
    """
    groups: dict[tuple, list[RunCurve]] = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    base = {key: _base_label(members[0]) for key, members in groups.items()}
    labelled = []
    for key, members in groups.items():
        label = base[key]
        siblings = [k for k in groups if base[k] == label]
        if len(siblings) > 1:
            varying = [name for name, value in key
                       if any(dict(other).get(name) != value for other in siblings if other is not key)]
            label += ": " + ", ".join(f"{n.split('.', 1)[1]}={_value(members[0], n)}" for n in varying)
        labelled.append((label, members))
    return labelled


def _base_label(run: RunCurve) -> str:
    preset = run.train.get("preset")
    return f"{run.train['algo']}{'/' + preset if preset else ''} on {run.train['env']}"


def _value(run: RunCurve, name: str) -> Any:
    section, field = name.split(".", 1)
    return (run.train if section == "train" else run.agent).get(field)


def aggregate(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], points: int = 200):
    """Mean, std, min and max over curves: ``(x, mean, std, min, max)``.

    Curves that overlap are interpolated onto a common x grid over the range all of them cover.
    Curves that do not (one evaluation each, or wall-clock times that never meet) are matched by
    evaluation index instead, with x the mean over curves: the i-th evaluation of every seed.
    """
    if len(xs) == 1:
        y = ys[0]
        return xs[0], y, np.zeros_like(y), y, y
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if hi > lo:
        grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x in xs]))
        if len(grid) > points:
            grid = np.linspace(lo, hi, points)
        stack = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys)])
    else:
        n = min(len(x) for x in xs)
        grid = np.stack([x[:n] for x in xs]).mean(0)
        stack = np.stack([y[:n] for y in ys])
    return grid, stack.mean(0), stack.std(0), stack.min(0), stack.max(0)


def plot_runs(
    paths: Sequence[str | Path],
    out: str | Path,
    x: XAxis = "both",
    band: Band = "minmax",
    title: str | None = None,
) -> Path:
    """Plot the learning curves of the runs in ``paths`` (runs or folders of runs) to a PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in ("both", "steps", "wall"):
        raise ValueError(f"x must be one of both, steps, wall; got {x!r}")
    if band not in ("minmax", "std", "none"):
        raise ValueError(f"band must be one of minmax, std, none; got {band!r}")
    runs = [r for r in (load_run(p) for p in find_runs(paths)) if len(r.env_step)]
    if not runs:
        raise ValueError("the runs have no evaluation rows in metrics.csv yet")
    groups = group_runs(runs)
    axes_spec = [("env_step", "environment steps"), ("wall_s", "wall-clock")]
    axes_spec = {"both": axes_spec, "steps": axes_spec[:1], "wall": axes_spec[1:]}[x]
    wall_max = max(float(r.wall_s[-1]) for r in runs)
    wall_unit, wall_scale = ("min", 60.0) if wall_max > 600 else ("s", 1.0)
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.0 * len(axes_spec), 4.2), squeeze=False)
    for ax, (column, xlabel) in zip(axes[0], axes_spec):
        for i, (label, members) in enumerate(groups):
            color = f"C{i % 10}"
            xs = [getattr(r, column) / (wall_scale if column == "wall_s" else 1.0) for r in members]
            grid, mean, std, lo, hi = aggregate(xs, [r.eval_return for r in members])
            seeds = len(members)
            ax.plot(grid, mean, color=color, lw=1.8, marker="o" if len(grid) < 15 else None, ms=3,
                    label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            if seeds > 1 and band != "none":
                low, high = (mean - std, mean + std) if band == "std" else (lo, hi)
                if len(grid) > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
                else:  # one evaluation: the spread as an error bar
                    ax.errorbar(grid, mean, yerr=[mean - low, high - mean], color=color, capsize=4, lw=1.2)
        ax.set_xlabel(xlabel + (f" ({wall_unit})" if column == "wall_s" else ""))
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    spread = {"minmax": "band: min-max over seeds", "std": "band: ±1 std over seeds", "none": ""}[band]
    several_seeds = any(len(m) > 1 for _, m in groups)
    fig.suptitle((title or "learning curves") + (f"  ({spread})" if spread and several_seeds else ""), fontsize=11)
    fig.tight_layout()
    out = plot_file(out, "learning_curve.png" if len(runs) == 1 else "learning_curves.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_file(out: str | Path, name: str) -> Path:
    """Where a plot asked for at ``out`` is written: inside ``out`` as ``name`` when it is a directory (or ends
    with a slash), with ``.png`` added when it has no suffix (matplotlib would add it without saying so)."""
    text = str(out)
    out = Path(out)
    if out.is_dir() or text.endswith(("/", "\\")):
        return out / name
    return out if out.suffix else out.with_name(out.name + ".png")


def write_learning_curve(run_dir: str | Path) -> Path | None:
    """``RUN/plots/learning_curve.png`` for one training run (None while it has no evaluation yet)."""
    run = load_run(run_dir)
    if not len(run.env_step):
        return None
    title = f"{run.train['algo']} on {run.train['env']}, seed {run.train.get('seed')}"
    return plot_runs([run_dir], Path(run_dir) / "plots" / "learning_curve.png", title=title)


def default_plot_path(paths: Sequence[str | Path]) -> Path:
    """``RUN/plots/learning_curve.png`` for one run; ``learning_curves.png`` in the common folder of several."""
    if len(paths) == 1 and _is_train_run(Path(paths[0])):
        return Path(paths[0]) / "plots" / "learning_curve.png"
    if len(paths) == 1:
        return Path(paths[0]) / "learning_curves.png"
    return Path("learning_curves.png")
