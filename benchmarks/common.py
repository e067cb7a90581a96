"""Helpers shared by the benchmarks: machine description, results JSON, docs table sections."""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

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
    path.write_text(json.dumps(data, indent=2))
    return path


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


def plot_seed_group(axes, runs: list[dict], label: str, style: str = "-", alpha: float = 0.2) -> None:
    """One curve per panel (env steps, training seconds): the mean over ``runs`` (each with
    ``curve`` = {step, return, train_s}) and, with several seeds, their min-max band."""
    import numpy as np

    n = min(len(r["curve"]["step"]) for r in runs)
    steps = np.array(runs[0]["curve"]["step"][:n])
    ret = np.array([r["curve"]["return"][:n] for r in runs])
    secs = np.array([r["curve"]["train_s"][:n] for r in runs]).mean(0)
    label = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
    for ax, x in ((axes[0], steps), (axes[1], secs)):
        line, = ax.plot(x, ret.mean(0), style, label=label)
        if len(runs) > 1:
            ax.fill_between(x, ret.min(0), ret.max(0), color=line.get_color(), alpha=alpha)
