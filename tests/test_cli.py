"""`modelrl plan`: happy path (run directory contents) and its main error messages."""
import csv
import json

import pytest
import yaml

from modelrl.cli import main


def test_plan_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["plan", "mppi", "--env", "Pendulum-v1", "--episodes", "2", "--max-steps", "20",
               "--num-samples", "64", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "ms/action" in printed
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["episode"] for r in rows] == ["0", "1"]
    assert {"env_step", "wall_s", "eval_return", "ms_per_action"} <= set(rows[0])
    assert rows[1]["env_step"] == "40"
    config = yaml.safe_load(open(out / "config.yaml"))
    assert config["planner"] == "mppi" and config["planner_kwargs"]["num_samples"] == 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_return"] == pytest.approx(sum(float(r["eval_return"]) for r in rows) / 2)
    png = (out / "plots" / "returns.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not (out / "checkpoints").exists()  # planning has nothing to resume


def test_plan_opt_passes_any_keyword(tmp_path):
    rc = main(["plan", "cem", "--episodes", "1", "--max-steps", "5", "--num-samples", "40", "--num-elites", "5",
               "--opt", "momentum=0.2", "noise_beta=2.0", "--no-save"])
    assert rc == 0


def test_plan_unknown_planner_lists_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "mppo", "--episodes", "1"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "mppi" in err


def test_plan_unknown_env_suggests_close_match(capsys):
    assert main(["plan", "mppi", "--env", "Pendulm-v1", "--no-save"]) == 2
    assert "Pendulum-v1" in capsys.readouterr().out


def test_plan_env_without_known_model(capsys):
    assert main(["plan", "mppi", "--env", "HalfCheetah-v5", "--no-save"]) == 2
    assert "No true dynamics" in capsys.readouterr().out


def test_plan_wrong_keyword_for_planner(capsys):
    assert main(["plan", "cem", "--temperature", "0.5", "--no-save", "--episodes", "1"]) == 2
    assert "temperature" in capsys.readouterr().out


def test_plan_bad_values(capsys):
    assert main(["plan", "mppi", "--horizon", "0", "--no-save"]) == 2
    assert "horizon" in capsys.readouterr().out
    assert main(["plan", "mppi", "--episodes", "0", "--no-save"]) == 2
    assert "episodes" in capsys.readouterr().out
