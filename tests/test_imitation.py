"""Imitation: label data sets on disk, experts (planner, run, human), bad labels, budget, BC and DAgger learning,
crash-and-resume without paying twice, and the `modelrl train dagger` command."""
import csv
import io

import numpy as np
import pytest
import torch

from modelrl.agents import make
from modelrl.agents.experts import (
    BadLabelError,
    Expert,
    HumanExpert,
    LabellingStopped,
    PlannerExpert,
    check_label,
    parse_expert_spec,
)
from modelrl.cli import main
from modelrl.data.datasets import LabelDataset
from modelrl.envs import make_env, true_dynamics
from modelrl.runner import experts as runner_experts
from modelrl.runner.train import TrainConfig, train

torch.set_num_threads(1)
CHEAP = ("num_samples=64",)  # a cheap MPPI teacher where the learning is not under test
SPACE = make_env("Pendulum-v1").action_space


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


class CountingExpert(Expert):
    """Wraps an expert and counts the labels it was asked for."""

    def __init__(self, inner: Expert, bad=None) -> None:
        self.inner, self.calls, self.bad, self.name = inner, 0, bad, "counting"

    def label(self, obs):
        self.calls += 1
        return self.bad if self.bad is not None else self.inner.label(obs)

    def reset(self):
        self.inner.reset()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def cheap_mppi(seed=0):
    return PlannerExpert("mppi", true_dynamics("Pendulum-v1"), SPACE, seed=seed, horizon=10, num_samples=64,
                         temperature=0.1)


# -- data sets -----------------------------------------------------------------------------------

def test_label_dataset_appends_survive_reopening_across_chunks(tmp_path):
    ds = LabelDataset(tmp_path / "labels", obs_dim=3, action_dim=1, chunk_size=4)
    obs = np.arange(30, dtype=np.float32).reshape(10, 3)
    for i in range(10):
        ds.append(obs[i], [i / 10], step=i + 1, round=1 + i // 4)
    files = sorted(p.name for p in (tmp_path / "labels").iterdir())
    assert files == ["chunk-000000.npz", "chunk-000001.npz", "meta.json", "open-000002.bin"]
    with open(tmp_path / "labels" / "open-000002.bin", "ab") as f:
        f.write(b"\x01\x02\x03")  # a crash in the middle of writing a record
    again = LabelDataset(tmp_path / "labels", obs_dim=3, action_dim=1)  # what a resumed run sees
    assert len(again) == 10
    np.testing.assert_array_equal(again.obs, obs)
    np.testing.assert_allclose(again.action[:, 0], np.arange(10) / 10, rtol=1e-6)
    assert again.step.tolist() == list(range(1, 11)) and again.round.tolist()[-1] == 3
    again.append(obs[0], [0.5])
    again.append(obs[1], [0.6])  # fills chunk 2: sealed
    assert len(LabelDataset(tmp_path / "labels")) == 12
    assert not list((tmp_path / "labels").glob("open-*"))
    again.append(obs[2], [0.7])
    # a seal that wrote chunk-000002.npz but crashed before deleting its open file
    (tmp_path / "labels" / "open-000002.bin").write_bytes(b"\x00" * 40)
    reopened = LabelDataset(tmp_path / "labels")
    assert len(reopened) == 13 and not (tmp_path / "labels" / "open-000002.bin").exists()
    with np.load(again.export(tmp_path / "all.npz")) as f:
        assert f["obs"].shape == (13, 3) and f["action"].dtype == np.float32
    assert len(LabelDataset(tmp_path / "all.npz", obs_dim=3)) == 13  # an exported file opens read-only
    with pytest.raises(ValueError, match="obs_dim = 3, expected 5"):
        LabelDataset(tmp_path / "labels", obs_dim=5, action_dim=1)
    with pytest.raises(PermissionError):
        LabelDataset(tmp_path / "labels", read_only=True).append(obs[0], [0.0])
    with pytest.raises(FileNotFoundError):
        LabelDataset(tmp_path / "nothing", read_only=True)


# -- bad labels ----------------------------------------------------------------------------------

def test_bad_labels_are_refused_with_clear_errors():
    assert check_label(0.5, SPACE).tolist() == [0.5]
    assert check_label([1.0 + 1e-8], SPACE).tolist() == [1.0]  # float rounding at the bound is clipped
    with pytest.raises(BadLabelError, match="NaN or inf at index"):
        check_label([np.nan], SPACE, obs=np.zeros(3), expert="mppi")
    with pytest.raises(BadLabelError, match=r"shape \(2,\).*actions have shape \(1,\)"):
        check_label([0.1, 0.2], SPACE)
    with pytest.raises(BadLabelError, match="out of bounds"):
        check_label([1.5], SPACE)
    with pytest.raises(BadLabelError, match="not numeric"):
        check_label("left", SPACE)


@pytest.mark.parametrize("bad, message", [([np.nan], "NaN"), ([0.1, 0.2], "shape"), ([-3.0], "out of bounds")])
def test_a_bad_label_stops_dagger_with_the_expert_and_observation_named(bad, message):
    env = make_env("Pendulum-v1", seed=0)
    agent = make("dagger", env)
    agent.attach(expert=CountingExpert(cheap_mppi(), bad=bad))
    obs, _ = env.reset(seed=0)
    with pytest.raises(BadLabelError, match=rf"expert 'counting'.*{message}"):
        agent.act(obs)
    assert agent.labels_paid == 0  # nothing refused reaches the data set


# -- experts -------------------------------------------------------------------------------------

def test_expert_specs_and_unknown_expert():
    assert parse_expert_spec("mppi") == ("planner", "mppi")
    assert parse_expert_spec("run:runs/x") == ("run", "runs/x")
    assert parse_expert_spec("human") == ("human", None)
    with pytest.raises(ValueError, match="Did you mean mppi"):
        parse_expert_spec("mpc")
    with pytest.raises(ValueError, match="run:PATH"):
        make("dagger", make_env("Pendulum-v1"), expert="teacher")
    with pytest.raises(ValueError, match="dagger needs an expert"):
        make("dagger", make_env("Pendulum-v1"), expert="none")


def test_human_expert_reads_piped_input_and_refuses_bad_entries():
    out = io.StringIO()
    human = HumanExpert(SPACE, stdin=io.StringIO("abc\n5\nnan\n0.25\n-1\nq\n"), stdout=out,
                        obs_names=["cos_th", "sin_th", "thdot"])
    assert human.label(np.array([1.0, 0.0, 0.5])).tolist() == [0.25]
    assert human.label(np.array([0.0, 1.0, 0.0])).tolist() == [-1.0]
    with pytest.raises(LabellingStopped):
        human.label(np.zeros(3))
    shown = out.getvalue()
    assert "thdot=+0.5000" in shown and "in [-1..1]" in shown
    assert shown.count("refused:") == 3 and "out of bounds" in shown and "NaN" in shown


def test_human_expert_in_the_run_loop_then_resume(tmp_path, monkeypatch):
    """A person labels 5 steps then stops (q); the run resumes from its labels without asking again."""
    answers = "\n".join(["0.5"] * 5 + ["q"]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(answers))
    monkeypatch.setattr("sys.stdout", io.StringIO())
    cfg = TrainConfig("dagger", "Pendulum-v1", 8, seed=0, eval_every=8, eval_episodes=1)
    with pytest.raises(LabellingStopped):
        train(cfg, overrides={"expert": "human", "round_steps": 4, "label_every": 1, "hidden_sizes": (16,)},
              out=tmp_path / "h", progress=False)
    assert len(LabelDataset(tmp_path / "h" / "labels")) == 5  # each label on disk as soon as it was typed
    monkeypatch.setattr("sys.stdin", io.StringIO("-0.5\n-0.5\n-0.5\n"))
    agent, _ = train(None, resume=tmp_path / "h", progress=False)  # no checkpoint yet: starts over, in place
    labels = LabelDataset(tmp_path / "h" / "labels")
    assert len(labels) == 8 and agent.labels_reused == 5
    assert labels.action[:, 0].tolist() == [0.5] * 5 + [-0.5] * 3
    assert rows(tmp_path / "h")[-1]["labels"] == "8.0"


def test_run_expert_loads_a_trained_agent(tmp_path):
    cfg = TrainConfig("bc", "Pendulum-v1", 40, seed=0, eval_every=40, eval_episodes=1)
    train(cfg, overrides={"expert_opts": CHEAP, "round_steps": 20, "hidden_sizes": (16,)}, out=tmp_path / "t",
          progress=False)
    expert = runner_experts.resolve_expert(f"run:{tmp_path / 't'}", "Pendulum-v1")
    a = expert.label(np.array([1.0, 0.0, 0.0], dtype=np.float32))
    assert a.shape == (1,) and -1 <= a[0] <= 1
    with pytest.raises(ValueError, match="trained on Pendulum-v1, not CartPoleSwingUp-v0"):
        runner_experts.resolve_expert(f"run:{tmp_path / 't'}", "CartPoleSwingUp-v0")
    cfg = TrainConfig("dagger", "Pendulum-v1", 20, seed=1, eval_every=20, eval_episodes=1)
    agent, _ = train(cfg, overrides={"expert": f"run:{tmp_path / 't'}", "round_steps": 10, "label_every": 1},
                     out=tmp_path / "s", progress=False)
    assert agent.labels_paid == 20


# -- budget, BC and DAgger -------------------------------------------------------------------------

def test_label_budget_counts_labels_and_the_learner_acts_afterwards():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("dagger", env, label_budget=30, round_steps=25, label_every=2, hidden_sizes=(16,))
    counting = CountingExpert(cheap_mppi())
    agent.attach(expert=counting)
    from modelrl.data.buffer import ReplayBuffer

    buf = ReplayBuffer(3, 1, 1000)
    obs, _ = env.reset(seed=0)
    for step in range(1, 101):
        a = agent.act(obs)
        nxt, r, te, tr, _ = env.step(a)
        buf.add(obs, a, r, nxt, te, tr)
        out = agent.update(buf, step)
        obs = nxt
        if step == 25:  # round 1: beta = 1, the expert acts and labels every step
            assert counting.calls == 25 and out["beta"] == 1.0 and out["fits"] == 1.0
        if step == 50:  # round 2: beta = 0, the learner acts, every 2nd step labelled; budget ends mid-round
            assert counting.calls == 30 and out["labels"] == 30.0
    assert counting.calls == 30 and agent.labels_paid == 30 and len(agent.dataset) == 30
    assert agent.fits == 2  # no new labels after round 2: nothing to refit


def test_beta_schedules():
    env = make_env("Pendulum-v1")
    first = make("dagger", env)
    assert [first.beta(i) for i in (1, 2, 3)] == [1.0, 0.0, 0.0]
    exp = make("dagger", env, beta_schedule="exp", beta_p=0.5)
    assert [exp.beta(i) for i in (1, 2, 3)] == [1.0, 0.5, 0.25]
    lin = make("dagger", env, beta_schedule="linear", beta_rounds=4)
    assert [lin.beta(i) for i in (1, 3, 5, 9)] == [1.0, 0.5, 0.0, 0.0]
    assert make("bc", env).beta(7) == 1.0
    with pytest.raises(ValueError, match="beta_schedule"):
        make("dagger", env, beta_schedule="cosine")
    assert make("dagger", env, preset="imitation-lib").beta(8) == pytest.approx(1 - 7 / 15)
    assert make("dagger", env, preset="multimodal").config.label_every == 4
    assert make("bc", env, preset="imitation-lib").policy.kind == "gaussian"


@pytest.mark.parametrize("algo, steps", [("bc", 1000), ("dagger", 1000), ("dagger", 1600)])
def test_bc_and_dagger_learn_pendulum_from_mppi(tmp_path, algo, steps):
    """Short version of the benchmark: 1000 labels of the true-model MPPI teacher, 5 evaluation episodes.

    DAgger with the defaults (Ross et al.: an episode a round, every step labelled), and with the
    multimodal preset (1600 steps: round 1 is 4 expert episodes, 800 labels; round 2 is 4 learner
    episodes labelled every 4th step)."""
    cfg = TrainConfig(algo, "Pendulum-v1", steps, seed=0, eval_every=steps, eval_episodes=5,
                      preset="multimodal" if steps == 1600 else None)
    agent, run = train(cfg, overrides={"label_budget": 1000, "expert_opts": ("num_samples=300",)},
                       out=tmp_path / f"{algo}-{steps}", progress=False)
    final = rows(run)[-1]
    assert agent.labels_paid == 1000 and final["labels"] == "1000.0"
    assert final["dataset_size"] == "1000.0"  # the last labels were fitted (the budget ended the round)
    assert float(final["eval_return"]) > -250  # random policy: about -1200; the teacher: about -120 here


def test_mixture_student_picks_a_mode_where_regression_averages():
    """Two-valued labels (push left or right from rest at the bottom): regression answers ~0, the mixture +-1."""
    env = make_env("Pendulum-v1", seed=0)
    rng = np.random.default_rng(0)
    obs = np.c_[-np.ones(400), rng.normal(0, 0.01, 400), rng.normal(0, 0.01, 400)].astype(np.float32)
    modes = np.where(np.arange(400) % 2 == 0, 1.0, -1.0)
    answers = {}
    for policy in ("deterministic", "mixture"):
        agent = make("bc", env, policy=policy, hidden_sizes=(32,), epochs=150, seed=1)
        labels = LabelDataset(None, 3, 1)
        for o, a in zip(obs, modes):
            labels.append(o, [a])
        agent.attach(dataset=labels)
        agent.n_labels = len(labels)
        agent._fit()
        answers[policy] = float(agent.act(obs[0], deterministic=True)[0])
    assert abs(answers["deterministic"]) < 0.3
    assert abs(answers["mixture"]) > 0.8


def test_gaussian_policy_trained_by_likelihood():
    env = make_env("Pendulum-v1", seed=0)
    agent = make("bc", env, policy="gaussian", hidden_sizes=(32,), epochs=30)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, 3)).astype(np.float32)
    labels = LabelDataset(None, 3, 1)
    for o in obs:
        labels.append(o, np.clip([0.5 * o[2]], -1, 1))
    agent.attach(dataset=labels)
    agent.n_labels = len(labels)
    out = agent._fit()
    assert np.isfinite(out["policy_loss"]) and out["policy_mse"] < 0.05
    a1 = agent.act(obs[0], deterministic=True)
    assert np.array_equal(a1, agent.act(obs[0], deterministic=True))  # evaluation uses the mean
    samples = {float(agent.student_action(obs[0], deterministic=False)[0]) for _ in range(5)}
    assert len(samples) > 1


@pytest.mark.parametrize("policy", ["deterministic", "gaussian", "mixture"])
def test_numpy_evaluation_path_matches_torch(policy):
    env = make_env("Pendulum-v1", seed=0)
    agent = make("bc", env, policy=policy, hidden_sizes=(16, 16))
    agent.policy.normalizer.fit(torch.randn(50, 3) * 3)
    obs = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32) * 3
    with torch.no_grad():
        ref = agent.policy.act(torch.as_tensor(obs), deterministic=True).numpy().clip(-1, 1)
    fast = np.stack([agent.act(o, deterministic=True) for o in obs])
    np.testing.assert_allclose(fast, ref, atol=1e-5)


# -- crash and resume ----------------------------------------------------------------------------

class Crash(Exception):
    pass


def test_crash_mid_round_resumes_without_losing_or_repaying_labels(tmp_path, monkeypatch):
    experts = []

    def counting_resolve(spec, env_id, seed=0, opts=(), action_space=None, stdin=None, stdout=None):
        experts.append(CountingExpert(cheap_mppi(seed)))
        return experts[-1]

    import modelrl.runner.train as loop

    monkeypatch.setattr(loop, "resolve_expert", counting_resolve)  # the expert factory the loop hands the agent
    cfg = TrainConfig("dagger", "Pendulum-v1", 600, seed=3, eval_every=200, eval_episodes=1)
    # round 1 (steps 1-200): the expert acts, 200 labels; rounds 2 and 3: the learner acts, every 2nd step labelled
    over = {"hidden_sizes": (32,), "epochs": 3, "round_episodes": 1, "label_every": 2}
    full, full_dir = train(cfg, overrides=over, out=tmp_path / "full", progress=False)
    assert experts[-1].calls == 400

    def crash(step):
        if step == 450:  # mid-round: round 3 is steps 401-600, the last checkpoint is at 400
            raise Crash

    with pytest.raises(Crash):
        train(cfg, overrides=over, out=tmp_path / "crashed", progress=False, on_step=crash)
    assert experts[-1].calls == 325 and len(LabelDataset(tmp_path / "crashed" / "labels")) == 325
    resumed, _ = train(None, resume=tmp_path / "crashed", progress=False)
    assert experts[-1].calls == 75  # the 25 labels of steps 401-449 are reused, those of 451-599 are new
    assert resumed.labels_reused == 25 and resumed.labels_paid == 400
    a, b = LabelDataset(full_dir / "labels"), LabelDataset(tmp_path / "crashed" / "labels")
    assert b.step.tolist() == a.step.tolist()  # every labelled step once: none lost, none twice
    assert len(set(b.step.tolist())) == 400
    np.testing.assert_array_equal(a.obs, b.obs)  # the replay met the same observations
    assert [r["env_step"] for r in rows(tmp_path / "crashed")] == ["200", "400", "600"]
    assert rows(tmp_path / "crashed")[-1]["labels"] == "400.0"

    def same(r):
        return {k: v for k, v in r.items() if "wall" not in k and "ms" not in k and "cpu_s" not in k}

    assert [same(r) for r in rows(full_dir)[:2]] == [same(r) for r in rows(tmp_path / "crashed")[:2]]


# -- command line ----------------------------------------------------------------------------------

def test_cli_train_dagger_with_mppi_and_unknown_expert(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "dagger", "--env", "Pendulum-v1", "--expert", "mppi", "--expert-opts", "num_samples=64",
               "--steps", "200", "--label-budget", "120", "--eval-every", "200", "--eval-episodes", "1",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert len(LabelDataset(out / "labels")) == 120
    final = rows(out)[-1]
    assert final["labels"] == "120.0" and float(final["expert_ms_per_label"]) > 0
    assert main(["train", "dagger", "--expert", "mpc", "--steps", "10", "--out", str(tmp_path / "x")]) == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert "Unknown expert 'mpc'" in printed and "Did you mean mppi" in printed
    assert not (tmp_path / "x").exists()  # refused before a run directory was made


def test_cli_human_labeller_stops_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "human"
    monkeypatch.setattr("sys.stdin", io.StringIO("0.5\n0.5\nq\n"))
    args = ["train", "dagger", "--expert", "human", "--steps", "6", "--round-steps", "3", "--eval-every", "6",
            "--eval-episodes", "1", "--hidden-sizes", "16", "--out", str(out)]
    assert main(args) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "stopped after 2 labels" in printed and f"--resume {out}" in printed
    monkeypatch.setattr("sys.stdin", io.StringIO("-0.5\n" * 4))
    assert main(["train", "dagger", "--resume", str(out)]) == 0
    labels = LabelDataset(out / "labels")
    assert labels.action[:, 0].tolist() == [0.5, 0.5, -0.5, -0.5, -0.5, -0.5]
