"""The code in docs/mpc_library.md and docs/custom_env.md runs as written, and so does the command-line path
of a custom env (`--env module:Id`)."""
import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def run_blocks(page: str) -> dict:
    namespace: dict = {}
    for i, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page} (block {i})", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_mpc_library_page_runs(capsys):
    run_blocks("mpc_library.md")
    out = capsys.readouterr().out
    assert "return through the learned model" in out and "between LQR and iLQR" in out


@pytest.mark.slow
def test_custom_env_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # section 4 writes runs/pointmass
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding environment")
        run_blocks("custom_env.md")
    assert (tmp_path / "runs" / "pointmass" / "plots" / "learning_curve.png").exists()


@pytest.mark.slow
def test_custom_env_from_the_command_line(tmp_path, monkeypatch, capsys):
    """Sections 1 and 2 as a module, trained, evaluated and filmed through `--env my_envs:PointMass-v0`."""
    from modelrl.cli import main

    blocks = python_blocks("custom_env.md")
    (tmp_path / "my_envs.py").write_text(blocks[0] + "\n" + blocks[1])
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Overriding environment")
        assert main(["train", "mpc", "--env", "my_envs:PointMass-v0", "--preset", "v1.5", "--steps", "100",
                     "--explore-steps", "100", "--eval-episodes", "1", "--out", str(run), "--no-progress"]) == 0
        assert main(["eval", str(run), "--episodes", "1", "--video", "--max-steps", "20"]) == 0
    assert "PointMass-v0" in capsys.readouterr().out
    import imageio.v2 as imageio

    frame = imageio.imread(run / "videos" / "episode_0_frame.png")
    assert frame.shape == (60, 240, 3) and (frame[..., 2] > 150).any()  # the blue mass is drawn
