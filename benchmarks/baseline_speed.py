"""Today's code against the code issue 16 was measured on: TD-MPC per agent step and evaluation of 10 episodes.

    python -m benchmarks.baseline_speed [--baseline 1fa57b8] [--rounds 3] [--repeats 30] [--skip-pets]

Issue 16 asks for CPU ratios of "today's code path against the new one". The old tree (by default
commit 1fa57b8, the last before the issue's changes: no sampling core, no lockstep evaluation, no
compile option) is unpacked from git into a temporary folder, and the same probe
(``benchmarks/_speed_probe.py``, which uses only calls both trees have) runs in child processes on
the old tree and on this one, alternating, ``rounds`` times, one thread each. Each tree runs its
defaults: today's TD-MPC ``cpu`` preset compiles (``compile=True``); the eager figure of today's tree is
measured beside it. Writes benchmarks/results/baseline_speed.json and a section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, machine, md_table, save_results, write_docs_section

PROBE = Path(__file__).with_name("_speed_probe.py")
BASELINE = "1fa57b8"  # 2026-11-26, the last commit before issue 16's changes


def unpack(rev: str, dest: Path) -> Path:
    """``modelrl/`` of commit ``rev``, unpacked under ``dest``."""
    archive = dest / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "modelrl"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def probe(tree: Path, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise RuntimeError(f"probe {args} on {tree} failed:\n{out.stderr[-3000:]}")


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30, help="timed plan/update calls per TD-MPC probe")
    p.add_argument("--skip-pets", action="store_true", help="leave out pets-cpu evaluation (about 2.5 CPU min a run)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelrl-baseline-") as tmp:
        old = unpack(args.baseline, Path(tmp))
        new = ROOT
        variants = {  # name: (tree, probe args)
            "old": (old, []), "new": (new, []), "new eager": (new, ["--eager"]),
        }
        step: dict[str, list[dict]] = {k: [] for k in variants}
        for r in range(args.rounds):
            for name, (tree, extra) in variants.items():
                step[name].append(probe(tree, "tdmpc-step", "--repeats", str(args.repeats), *extra))
                print(f"round {r} tdmpc-step {name}: {step[name][-1]}", flush=True)
        cases = ["eval-mpc-v1.5", "eval-tdmpc-cpu"] + ([] if args.skip_pets else ["eval-pets-cpu"])
        evals: dict[str, dict[str, list[dict]]] = {c: {"old": [], "new": []} for c in cases}
        for r in range(args.rounds):
            for case in cases:
                evals[case]["old"].append(probe(old, case))
                evals[case]["new"].append(probe(new, case, "--lockstep"))
                print(f"round {r} {case}: old {evals[case]['old'][-1]['cpu_s']:.1f} CPU s, "
                      f"new {evals[case]['new'][-1]['cpu_s']:.1f}", flush=True)
    step_rows = {k: {"plan_ms": median_of(v, "plan_ms"), "update_ms": median_of(v, "update_ms"),
                     "first_wall_s": median_of(v, "first_wall_s")} for k, v in step.items()}
    base = step_rows["old"]["plan_ms"] + step_rows["old"]["update_ms"]
    for row in step_rows.values():
        row["ratio"] = (row["plan_ms"] + row["update_ms"]) / base
    eval_rows = {c: {k: {"cpu_s": median_of(v, "cpu_s"), "mean_return": median_of(v, "mean_return")}
                     for k, v in d.items()} for c, d in evals.items()}
    m = machine()
    save_results("baseline_speed", {"machine": m, "baseline": args.baseline, "rounds": args.rounds,
                                    "tdmpc_step": step_rows, "evaluation": eval_rows})
    t1 = md_table(["TD-MPC `cpu` preset", "ms / plan", "ms / update", "plan + update, against the old code"],
                  [[name, f"{r['plan_ms']:.1f}", f"{r['update_ms']:.1f}", f"{r['ratio']:.2f}x"]
                   for name, r in step_rows.items()])
    t2 = md_table(["10 evaluation episodes", "old: one after another, CPU s", "new: lockstep, CPU s", "speed-up",
                   "mean return old / new"],
                  [[c, f"{d['old']['cpu_s']:.1f}", f"{d['new']['cpu_s']:.1f}",
                    f"{d['old']['cpu_s'] / d['new']['cpu_s']:.2f}x",
                    f"{d['old']['mean_return']:.1f} / {d['new']['mean_return']:.1f}"] for c, d in eval_rows.items()])
    write_docs_section("baseline_speed", "### Against the code before issue 16\n\n"
                       f"`python -m benchmarks.baseline_speed` on {m['cpu']}, {m['date']}, torch {m['torch']}, "
                       "1 thread per child process, medians of "
                       f"{args.rounds} alternating rounds of thread CPU time (evaluation: process CPU time). Old "
                       f"code: commit {args.baseline}, each tree at its defaults (today's `cpu` preset compiles; "
                       f"`new eager` sets `compile=False`).\n\n{t1}\n\n{t2}\n")
    print(t1 + "\n\n" + t2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
