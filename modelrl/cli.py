"""The ``modelrl`` command line: ``modelrl plan PLANNER --env ENV [--episodes N] [--horizon H] ...``."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro
import yaml

PlannerName = Literal["mppi", "cem", "icem", "random_shooting", "ilqr", "lqr"]


@dataclasses.dataclass
class PlanArgs:
    """Closed-loop MPC on a real environment with its true model; prints returns, writes a run directory."""

    planner: Annotated[PlannerName, tyro.conf.Positional]
    """Which planner: mppi, cem, icem, random_shooting, ilqr (lqr needs a linear model)."""
    env: str = "Pendulum-v1"
    """Environment id with a known model (see `modelrl.envs.true_dynamics`)."""
    episodes: int = 10
    """Number of episodes; episode i resets with seed + i."""
    seed: int = 0
    out: Path | None = None
    """Run directory (default runs/<planner>/<env>/<seed>-<time>/)."""
    max_steps: int | None = None
    """Steps per episode (default: the env's time limit)."""
    horizon: int | None = None
    """Planning horizon H (default: the planner's or the env preset's)."""
    num_samples: int | None = None
    """Sampled action sequences per iteration (random_shooting, cem, mppi)."""
    iterations: int | None = None
    """Optimisation iterations per control step (cem, mppi, ilqr)."""
    temperature: float | None = None
    """MPPI temperature lambda."""
    noise_sigma: float | None = None
    """MPPI noise standard deviation (normalised action units)."""
    num_elites: int | None = None
    """Elites kept (cem) or top-k weighted (mppi)."""
    opt: tuple[str, ...] = ()
    """Any other planner keyword as KEY=VALUE (e.g. --opt momentum=0.2 noise_beta=2.0)."""
    no_save: bool = False
    """Do not write a run directory."""


def _planner_overrides(args: PlanArgs) -> dict:
    names = ("horizon", "num_samples", "iterations", "temperature", "noise_sigma", "num_elites")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    for item in args.opt:
        if "=" not in item:
            raise SystemExit(f"--opt takes KEY=VALUE pairs, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def plan(args: PlanArgs) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelrl.runner.plan import run_plan

    console = Console()
    try:
        result = run_plan(args.planner, args.env, episodes=args.episodes, seed=args.seed,
                          planner_kwargs=_planner_overrides(args), out=args.out, max_steps=args.max_steps,
                          save=not args.no_save)
    except TypeError as err:  # a keyword the chosen planner does not take
        console.print(f"[red]error:[/red] {err}")
        return 2
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    table = Table(title=f"{args.planner} on {args.env}")
    for col in ("episode", "return", "steps", "ms/action"):
        table.add_column(col, justify="right")
    for i, (r, n, ms) in enumerate(zip(result.returns, result.lengths, result.ms_per_action)):
        table.add_row(str(i), f"{r:.1f}", str(n), f"{ms:.2f}")
    import numpy as np

    table.add_row("mean", f"{np.mean(result.returns):.1f} ± {np.std(result.returns):.1f}", "",
                  f"{np.mean(result.ms_per_action):.2f}", style="bold")
    console.print(table)
    if result.run_dir is not None:
        console.print(f"run directory: {result.run_dir} (metrics.csv, summary.json, plots/returns.png)")
    return 0


@dataclasses.dataclass
class TrainHelp:
    """Train an agent: `modelrl train ALGO --env ENV --steps N [--seed S] [--preset NAME] [--out DIR]
    [--resume DIR] [--<field> VALUE ...]`. `modelrl train ALGO --help` lists ALGO's fields and presets."""

    algo: Annotated[str, tyro.conf.Positional]
    """Algorithm (e.g. mpc)."""


@dataclasses.dataclass
class LoopArgs:
    """The training loop's options (the algorithm's own fields follow, without a prefix)."""

    env: str = "Pendulum-v1"
    """Environment id (Gymnasium id or dmc:<domain>-<task>)."""
    steps: int = 10_000
    """Environment steps to train for."""
    seed: int = 0
    preset: str | None = None
    """Named preset of the algorithm's config (applied before the field flags)."""
    out: Path | None = None
    """Run directory (default runs/<algo>/<env>/<seed>-<time>/)."""
    resume: Path | None = None
    """Continue the run in this directory from its last checkpoint (other options are ignored)."""
    eval_every: int = 1000
    """Evaluate every this many environment steps (at the next episode end)."""
    eval_episodes: int = 10
    checkpoint_every: int | None = None
    """Checkpoint every this many steps (at episode ends); default: eval_every."""
    action_repeat: int = 1
    no_progress: bool = False


def _train_args_type(config_cls, default_config):
    """LoopArgs plus an ``agent`` field holding the algorithm's config, flags without prefix."""
    return dataclasses.make_dataclass(
        "TrainArgs",
        [("agent", Annotated[config_cls, tyro.conf.OmitArgPrefixes],
          dataclasses.field(default_factory=lambda: dataclasses.replace(default_config)))],
        bases=(LoopArgs,),
    )


def train_command(argv: list[str]) -> int:
    """``modelrl train ALGO ...``: parse with ALGO's config (preset applied to the defaults), then run."""
    from rich.console import Console

    from modelrl.agents import AGENTS, agent_classes

    console = Console()
    if not argv or argv[0].startswith("-"):
        tyro.cli(TrainHelp, args=argv or ["--help"], prog="modelrl train")
        return 2
    algo, rest = argv[0], argv[1:]
    try:
        config_cls, _ = agent_classes(algo)
        preset = None
        if "--preset" in rest and rest.index("--preset") + 1 < len(rest):
            preset = rest[rest.index("--preset") + 1]
        from modelrl.agents.base import build_config

        default_config = build_config(config_cls, preset)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    presets = ", ".join(config_cls.PRESETS) or "none"
    args = tyro.cli(_train_args_type(config_cls, default_config), args=rest, prog=f"modelrl train {algo}",
                    description=f"Train {algo} (algorithms: {', '.join(AGENTS)}; presets of {algo}: {presets}).")
    from modelrl.runner.train import TrainConfig, TrainingError, train

    cfg = TrainConfig(algo=algo, env=args.env, steps=args.steps, seed=args.seed, preset=args.preset,
                      eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                      checkpoint_every=args.checkpoint_every, action_repeat=args.action_repeat)
    overrides = {f.name: getattr(args.agent, f.name) for f in dataclasses.fields(args.agent)}
    try:
        _, run_dir = train(cfg, overrides=overrides, out=args.out, resume=args.resume, progress=not args.no_progress)
    except (ValueError, TrainingError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    console.print(f"run directory: {run_dir} (config.yaml, metrics.csv, tb/, checkpoints/)")
    return 0


@dataclasses.dataclass
class DiagnoseArgs:
    """Prediction errors of a run's learned model on fresh random episodes; writes diagnostics.json and a plot."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (from `modelrl train`)."""
    episodes: int = 5
    """Fresh episodes of uniform random actions to test on."""
    k: int = 30
    """Longest open-loop prediction, in steps."""
    seed: int = 12345


def diagnose(args: DiagnoseArgs) -> int:
    from rich.console import Console
    from rich.table import Table

    from modelrl.runner.diagnose import diagnose as run_diagnose

    console = Console()
    try:
        res = run_diagnose(args.run, episodes=args.episodes, k=args.k, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    table = Table(title=f"model diagnostics ({res['transitions']} held-out transitions)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("one-step MSE", f"{res['one_step_mse']:.3g}")
    table.add_row("one-step MSE / var(s' - s)", f"{res['one_step_normalized_mse']:.3g}")
    table.add_row("one-step RMSE per dim", ", ".join(f"{v:.3g}" for v in res["one_step_rmse_per_dim"]))
    for j in sorted({1, 5, 10, len(res["k_step_mse"])}):
        if j <= len(res["k_step_mse"]):
            table.add_row(f"{j}-step open-loop MSE", f"{res['k_step_mse'][j - 1]:.3g}")
    console.print(table)
    console.print(f"wrote {args.run / 'diagnostics.json'} and {args.run / 'plots' / 'diagnostics.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``modelrl`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return train_command(argv[1:])
    args = tyro.extras.subcommand_cli_from_dict(
        {"plan": PlanArgs, "train": TrainHelp, "diagnose": DiagnoseArgs}, prog="modelrl", args=argv,
        description="modelrl: model-based RL, MPC and planning.",
    )
    if isinstance(args, PlanArgs):
        return plan(args)
    if isinstance(args, DiagnoseArgs):
        return diagnose(args)
    raise AssertionError(f"unhandled command {args!r}")


if __name__ == "__main__":
    sys.exit(main())
