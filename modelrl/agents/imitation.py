"""Imitation learning (behaviour cloning, Pomerleau 1989; DAgger, Ross, Gordon, Bagnell 2011): behaviour cloning and
DAgger with a pluggable expert.

DAgger (Ross, Gordon and Bagnell 2011, Algorithm 3.1), read top to bottom:
1. train pi_theta(a_t | o_t) on the labelled set D = {(o_1, a_1), ..., (o_N, a_N)};
2. run pi_i = beta_i pi* + (1 - beta_i) pi_theta to collect observations D_pi = {o_1, ..., o_M}:
   at every step the expert pi* is asked for its label a*_t of o_t, and its action is executed
   with probability beta_i, the learner's otherwise;
3. the expert's labels make D_pi = {(o_t, a*_t)};
4. D <- D U D_pi, retrain, and repeat (round i+1).
Behaviour cloning is the same loop with beta = 1 always: D holds expert trajectories only.

In the run loop a round is ``round_episodes`` episodes (or ``round_steps`` env steps): ``act``
asks the expert for the label of the observation (at every ``label_every``-th step where the
learner acts, at every step where the expert acts; counted, at most ``label_budget``), writes it
to the label data set at once, and returns the executed action; ``update`` retrains pi_theta on
all of D at the end of a round. When the budget is spent, labelling stops and the learner acts.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelrl.agents.base import BC_LOG_STD_BOUNDS, Agent, AgentConfig, RunContext, stream_seed
from modelrl.agents.experts import Expert, HumanExpert, check_label, parse_expert_spec
from modelrl.data.datasets import LABELS_DIR, LabelDataset
from modelrl.device import generator_state, load_generator_state
from modelrl.models.normalizer import Normalizer

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
LOG_STD_MIN, LOG_STD_MAX = BC_LOG_STD_BOUNDS


@dataclasses.dataclass
class ImitationConfig(AgentConfig):
    """Fields shared by bc and dagger. Sources: Ross et al. 2011 (DAgger), the imitation library (BC, DAgger)."""

    expert: str = "mppi"
    """Who labels: a planner on the env's true model (mppi, cem, icem, random_shooting, ilqr; the
    `modelrl plan` preset of that env), run:PATH (a trained agent's run directory), human (a prompt),
    none (bc on --demos only)."""
    expert_opts: tuple[str, ...] = ()
    """Planner keywords for a planner expert, KEY=VALUE (e.g. num_samples=500), over the plan preset."""
    label_budget: int | None = None
    """Most labels to ask the expert for (None: no limit); the learner acts alone afterwards."""
    demos: str | None = None
    """A label data set (a labels/ directory, a run directory, or an exported .npz) added to D for free."""
    # -- the policy pi_theta
    policy: Literal["deterministic", "gaussian", "mixture"] = "deterministic"
    """deterministic: a = mu(o), trained by regression (MSE); gaussian: N(mu(o), sigma(o)^2), by likelihood;
    mixture: a mixture of ``components`` Gaussians, by likelihood, acting with its most probable mean
    (for experts whose labels have several modes, where regression averages them: docs/imitation.md)."""
    components: int = 5  # mixture only; robomimic BC-GMM (Mandlekar et al. 2021): num_modes 5
    hidden_sizes: tuple[int, ...] = (256, 256)
    """ours, not tuned (the common 2 x 256 actor of SAC/TD3); the imitation library's BC default is (32, 32)."""
    # ours, not tuned (SB3's MlpPolicy, the imitation library's default, uses tanh)
    activation: Literal["relu", "tanh", "silu"] = "relu"
    lr: float = 1e-3  # imitation library BC: Adam with its default lr 1e-3
    batch_size: int = 64  # ours; the imitation library's BC default is 32
    epochs: int = 10
    """Passes over D at each round end; ours (the imitation library's DAgger trains 4 epochs per round)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant (imitation library); cosine: anneal the rate to 0 over each round's fit (an option; it did
    not change the returns of one 5000-label Pendulum-v1 data set refit offline, ours)."""
    ent_weight: float = 1e-3  # imitation library BC: entropy bonus weight (gaussian policy only)
    l2_weight: float = 0.0  # imitation library BC: L2 penalty on the weights
    retrain: Literal["continue", "scratch"] = "continue"
    """continue: keep training the same network each round (imitation library); scratch: a fresh
    network each round, as in Ross et al. 2011's "train classifier pi_{i+1} on D"."""
    round_episodes: int = 1
    """Episodes per round (Ross et al. 2011: one trajectory set per iteration; ours: one episode)."""
    round_steps: int = 0
    """N > 0: a round is N env steps instead (round_episodes is then ignored)."""
    label_every: int = 1
    """Ask for a label at every k-th step of a round where the learner acts (the expert's own steps are
    always labelled): consecutive observations are alike, so k > 1 spreads a label budget over more
    episodes and start states. Ross et al. 2011 label every step (1)."""
    match_atol: float = 1e-5
    """After a crash, a saved label is reused (not paid again) when the replayed observation is this close."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}


@dataclasses.dataclass
class BCConfig(ImitationConfig):
    """Behaviour cloning: the expert acts throughout (beta = 1, so every step is labelled); pi_theta fits its labels."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The imitation library's BC: FeedForward32Policy (2 x 32, tanh), a Gaussian policy, batch 32.
        "imitation-lib": {"hidden_sizes": (32, 32), "activation": "tanh", "batch_size": 32, "epochs": 4,
                          "policy": "gaussian"},
        # The student of dagger's "multimodal" preset, for a like-for-like comparison.
        "multimodal": {"policy": "mixture", "round_episodes": 4},
    }


@dataclasses.dataclass
class DAggerConfig(ImitationConfig):
    """DAgger with the beta schedules of Ross et al. 2011 (Sec. 3) and the imitation library."""

    beta_schedule: Literal["first", "exp", "linear", "constant"] = "first"
    """first: beta_1 = 1, then 0 (Ross et al. 2011: "beta_i = I(i = 1)", parameter-free, often best in practice);
    exp: beta_i = p^(i-1) (Ross et al. 2011); linear: beta_i = max(0, 1 - (i-1)/R) (imitation library,
    LinearBetaSchedule, R = 15); constant: beta_i = p."""
    beta_p: float = 0.5  # p of the exp and constant schedules (ours)
    beta_rounds: int = 15  # R of the linear schedule (imitation library: LinearBetaSchedule(15))

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The imitation library's DAgger: its BC student, 4 epochs a round, LinearBetaSchedule(15).
        "imitation-lib": {"hidden_sizes": (32, 32), "activation": "tanh", "batch_size": 32, "epochs": 4,
                          "policy": "gaussian", "beta_schedule": "linear", "beta_rounds": 15, "label_every": 1,
                          "round_episodes": 1},
        # For experts whose labels have several modes (the pendulum swing-up: push left or right from
        # rest): a mixture student, every 4th learner step labelled, rounds of 4 episodes. Measured on
        # Pendulum-v1 (5000 labels, seeds 0-2): within 1% of the expert, where the defaults (Ross et
        # al.'s regression student) fall 8% short on seed 2 and far short on seed 1 (docs/imitation.md).
        "multimodal": {"policy": "mixture", "label_every": 4, "round_episodes": 4},
    }


class Policy(nn.Module):
    """MLP pi_theta(a | o) on normalised observations.

    ``deterministic``: a = mu(o), fitted by mean squared error. ``gaussian``: N(mu(o), sigma(o)^2)
    with a state-dependent log std, fitted by likelihood. ``mixture``: K Gaussians with weights
    w_k(o) (a mixture density network, Bishop 1994), fitted by likelihood; it acts with the mean
    of its most probable component, so where the expert's labels have two modes (push left or
    right at the bottom of a swing-up) it picks one instead of averaging them to zero.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...], activation: str,
                 kind: str = "deterministic", components: int = 5) -> None:
        super().__init__()
        self.normalizer = Normalizer(obs_dim)
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.kind, self.action_dim = kind, action_dim
        self.k = components if kind == "mixture" else 1
        outputs = {"deterministic": action_dim, "gaussian": 2 * action_dim,
                   "mixture": self.k * (1 + 2 * action_dim)}[kind]
        self.head = nn.Linear(width, outputs)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(means [B, K, A], log stds [B, K, A] or None, log weights [B, K] or None); K = 1 unless a mixture."""
        out = self.head(self.body(self.normalizer.normalize(obs)))
        b, a, k = out.shape[0], self.action_dim, self.k
        if self.kind == "deterministic":
            return out.view(b, 1, a), None, None
        if self.kind == "gaussian":
            mean, log_std = out.split(a, dim=-1)
            return mean.view(b, 1, a), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).view(b, 1, a), None
        logits, mean, log_std = out.split([k, k * a, k * a], dim=-1)
        return (mean.view(b, k, a), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).view(b, k, a),
                F.log_softmax(logits, dim=-1))

    def loss(self, obs: Tensor, action: Tensor, ent_weight: float) -> Tensor:
        """Regression: mean squared error; Gaussian: negative log-likelihood minus an entropy bonus;
        mixture: negative log-likelihood of the mixture."""
        mean, log_std, log_w = self(obs)
        if log_std is None:
            return F.mse_loss(mean[:, 0], action)
        z = (action.unsqueeze(1) - mean) / log_std.exp()
        log_prob = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # [B, K]
        if log_w is None:
            entropy = (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)
            return -log_prob[:, 0].mean() - ent_weight * entropy[:, 0].mean()
        return -torch.logsumexp(log_w + log_prob, dim=-1).mean()

    def numpy_act(self) -> Callable[[np.ndarray], np.ndarray]:
        """The deterministic action as a numpy function of one observation: the same numbers without
        torch's per-call overhead (a few microseconds per layer instead of tens: the student's speed
        is the point of distilling). Snapshot of the current weights; rebuild it after training."""
        mean, std = self.normalizer.mean.cpu().numpy().copy(), self.normalizer.std.cpu().numpy().copy()
        layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                  for m in list(self.body) + [self.head] if isinstance(m, nn.Linear)]
        acts: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
            nn.ReLU: lambda x: np.maximum(x, 0.0), nn.Tanh: np.tanh, nn.SiLU: lambda x: x / (1.0 + np.exp(-x))}
        act = acts[type(self.body[1])] if len(self.body) else acts[nn.ReLU]  # no hidden layer: never called
        k, a_dim, mixture = self.k, self.action_dim, self.kind == "mixture"

        def forward(obs: np.ndarray) -> np.ndarray:
            x = (np.asarray(obs, dtype=np.float32).reshape(-1) - mean) / std
            for w, b in layers[:-1]:
                x = act(x @ w + b)
            out = x @ layers[-1][0] + layers[-1][1]
            if mixture:
                j = int(np.argmax(out[:k]))
                return out[k + j * a_dim: k + (j + 1) * a_dim]
            return out[:a_dim]

        return forward

    def act(self, obs: Tensor, deterministic: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """[B, A]: the mean (of the most probable component), or a sample of the policy."""
        mean, log_std, log_w = self(obs)
        rows = torch.arange(mean.shape[0])
        if log_w is None:
            k = torch.zeros(mean.shape[0], dtype=torch.long)
        elif deterministic:
            k = log_w.argmax(-1)
        else:
            k = torch.multinomial(log_w.exp(), 1, generator=generator)[:, 0]
        a = mean[rows, k]
        if log_std is not None and not deterministic:
            a = a + log_std[rows, k].exp() * torch.randn(a.shape, generator=generator)
        return a


class ImitationAgent(Agent):
    """DAgger (and, with beta = 1, behaviour cloning) in the common run loop.

    The expert and the label data set come from ``on_run_start`` (the run loop's expert factory builds
    ``config.expert``; the data set is ``<run>/labels/``); library users may pass them to the
    constructor or to ``attach``. Without a data set, labels are kept in memory.
    """

    config: ImitationConfig

    def __init__(self, env: gymnasium.Env, config: ImitationConfig, seed: int = 0, expert: Expert | None = None,
                 dataset: LabelDataset | None = None, demos: LabelDataset | None = None, device: str = "auto") -> None:
        super().__init__(env, config, seed, device)
        c = config
        kind, _ = parse_expert_spec(c.expert)  # unknown experts fail here, before a run directory exists
        if kind == "none" and (isinstance(self, DAggerAgent) or not c.demos):
            raise ValueError("expert 'none' is for bc on --demos only; dagger needs an expert to label the "
                             "learner's observations (mppi or another planner, run:PATH, human)")
        if c.policy not in ("deterministic", "gaussian", "mixture"):
            raise ValueError(f"policy must be 'deterministic', 'gaussian' or 'mixture', got {c.policy!r}")
        if c.components < 1:
            raise ValueError(f"components must be >= 1, got {c.components}")
        if c.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {c.activation!r}")
        if c.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {c.lr_schedule!r}")
        if c.retrain not in ("continue", "scratch"):
            raise ValueError(f"retrain must be 'continue' or 'scratch', got {c.retrain!r}")
        if c.label_budget is not None and c.label_budget < 0:
            raise ValueError(f"label_budget must be >= 0 or None, got {c.label_budget}")
        if c.round_steps < 0 or min(c.epochs, c.batch_size, c.label_every, c.round_episodes) < 1:
            raise ValueError("round_steps must be >= 0; epochs, batch_size, label_every and round_episodes >= 1")
        self.low = self.action_space.low.astype(np.float32).reshape(-1)
        self.high = self.action_space.high.astype(np.float32).reshape(-1)
        self.rng = np.random.default_rng(stream_seed(seed, "imitation.beta"))
        self.generator = torch.Generator(self.device).manual_seed(stream_seed(seed, "imitation.updates"))
        self._init_seed = stream_seed(seed, "imitation.init")
        self._build_policy()
        # D: rows [0, n_labels) of the data set, plus the demos. Rows beyond n_labels exist only
        # after a crash: labels already paid for, reused while the replay meets their observations.
        self.n_labels = 0
        self.round = 1  # i, as in Ross et al. (beta_1 is the first round's)
        self.fitted_on = 0  # |D| at the last fit
        self.fits = 0
        self.env_step = 0
        self.expert_seconds = 0.0
        self.labels_reused = 0
        self._round_paid, self._round_seconds, self._round_step, self._round_episodes = 0, 0.0, 0, 0
        self.expert: Expert | None = None
        self.dataset = LabelDataset(None, self.obs_dim, self.action_dim)
        self.demos: LabelDataset | None = None
        self.attach(expert=expert, dataset=dataset, demos=demos)

    # -- set-up ----------------------------------------------------------------------------
    @property
    def interactive(self) -> bool:
        return parse_expert_spec(self.config.expert)[0] == "human"

    def on_run_start(self, run: RunContext) -> None:
        """The expert ``config.expert`` names, the run's label data set (``<run>/labels/``, kept across resumes) and
        the demonstrations of ``config.demos`` (a labels directory or a run directory holding one)."""
        c = self.config
        expert = run.make_expert(c.expert, self.env_id, seed=self.seed, opts=c.expert_opts,
                                 action_space=self.action_space)
        dataset = LabelDataset(Path(run.run_dir) / LABELS_DIR, self.obs_dim, self.action_dim)
        demos = None
        if c.demos:
            path = Path(c.demos)
            if (path / LABELS_DIR / "meta.json").exists():  # a run directory: its labels
                path = path / LABELS_DIR
            demos = LabelDataset(path, self.obs_dim, self.action_dim, read_only=True)
        if isinstance(expert, HumanExpert):
            expert.resume_hint = f"continue with: modelrl train {run.algo} --resume {run.run_dir}"
        self.attach(expert=expert, dataset=dataset, demos=demos)

    def attach(self, expert: Expert | None = None, dataset: LabelDataset | None = None,
               demos: LabelDataset | None = None) -> None:
        """Give the agent its expert, its (on-disk) label data set, and demonstrations that cost nothing."""
        if expert is not None:
            self.expert = expert
        if dataset is not None:
            if dataset.obs_dim != self.obs_dim or dataset.action_dim != self.action_dim:
                raise ValueError(f"label data set stores obs/action dims {dataset.obs_dim}/{dataset.action_dim}, "
                                 f"the env has {self.obs_dim}/{self.action_dim}")
            self.dataset = dataset
        if demos is not None:
            self.demos = demos

    def _build_policy(self) -> None:
        c = self.config
        # numpy snapshot of the policy for evaluation, rebuilt on demand
        self._fast: Callable[[np.ndarray], np.ndarray] | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._init_seed)
            self.policy = Policy(self.obs_dim, self.action_dim, tuple(c.hidden_sizes), c.activation,
                                 kind=c.policy, components=c.components).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.lr, weight_decay=0.0)

    # -- acting ----------------------------------------------------------------------------
    def beta(self, i: int) -> float:
        """beta_i: the probability of executing the expert's action in round i (1-based)."""
        raise NotImplementedError

    @property
    def labels_paid(self) -> int:
        """Labels asked of the expert by this run (those reused after a crash were paid once)."""
        return len(self.dataset)

    @property
    def budget_left(self) -> float:
        b = self.config.label_budget
        return math.inf if b is None else b - self.labels_paid

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        if deterministic:
            return self.student_action(obs, deterministic=True)
        if self.fits == 0 and self._demo_count() > 0:  # D starts with the demos: pi_1 is trained on them
            self._fit()
        expert_acts = self.rng.random() < self.beta(self.round)  # pi_i = beta_i pi* + (1 - beta_i) pi_theta
        self._round_step += 1
        label = None
        if expert_acts or (self._round_step - 1) % self.config.label_every == 0:
            label = self._label(obs)
        if expert_acts and label is not None:
            return label
        return self.student_action(obs, deterministic=False)

    @torch.no_grad()
    def student_action(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """pi_theta's action: its mean (most probable mean for a mixture) or a sample; clipped to the bounds."""
        if deterministic:
            if self._fast is None:
                self._fast = self.policy.numpy_act()
            return np.clip(self._fast(obs), self.low, self.high).astype(np.float32)
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1), device=self.device)
        a = self.policy.act(o, deterministic=deterministic, generator=self.generator)
        return np.clip(a[0].cpu().numpy(), self.low, self.high)

    def act_batch(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The student's actions for a batch of observations (evaluation: no expert, no labels)."""
        if not deterministic:
            raise NotImplementedError("imitation agents act on one episode at a time while they collect labels")
        if self._fast is None:
            self._fast = self.policy.numpy_act()
        return np.stack([np.clip(self._fast(o), self.low, self.high) for o in obs]).astype(np.float32)

    def _label(self, obs: np.ndarray) -> np.ndarray | None:
        """The expert's label of ``obs``: reused from the data set after a crash, else asked for and saved."""
        ds = self.dataset
        if self.n_labels < len(ds):  # replaying the steps between the last checkpoint and a crash
            if np.allclose(ds.obs[self.n_labels], obs, rtol=0.0, atol=self.config.match_atol):
                self.n_labels += 1
                self.labels_reused += 1
                return ds.action[self.n_labels - 1].copy()
            self.n_labels = len(ds)  # the replay diverged: the saved labels stay in D, new ones are paid
        if self.expert is None or self.budget_left <= 0:
            return None
        t0 = time.perf_counter()
        raw = self.expert.label(obs)
        dt = time.perf_counter() - t0
        label = check_label(raw, self.action_space, obs, expert=f"expert {self.expert.name!r}")
        ds.append(obs, label, step=self.env_step + 1, round=self.round)
        self.n_labels = len(ds)
        self.expert_seconds += dt
        self._round_paid += 1
        self._round_seconds += dt
        return label

    def reset(self) -> None:
        if self.expert is not None:
            self.expert.reset()

    # -- learning --------------------------------------------------------------------------
    def _round_over(self, buffer, step: int) -> bool:
        """A round ends after ``round_episodes`` episodes (or ``round_steps`` steps), and at the end of
        the episode in which the label budget ran out, so that the last labels are fitted too."""
        last = (buffer.pos - 1) % buffer.capacity
        episode_end = bool(buffer.terminated[last] or buffer.truncated[last])
        self._round_episodes += episode_end
        if episode_end and self.budget_left <= 0 and self._round_paid > 0:
            return True
        if self.config.round_steps > 0:
            return step % self.config.round_steps == 0
        return self._round_episodes >= self.config.round_episodes

    def update(self, buffer, step: int) -> dict[str, float]:
        """At a round end: D <- D U D_pi (already in the data set), retrain pi_theta on D, next round."""
        self.env_step = step
        if not self._round_over(buffer, step):
            return {}
        out = {"labels": float(self.n_labels), "round": float(self.round), "beta": self.beta(self.round)}
        if self._round_paid:
            out["expert_ms_per_label"] = 1000.0 * self._round_seconds / self._round_paid
        size = self.n_labels + self._demo_count()
        if size > self.fitted_on:
            out.update(self._fit())
        self.round += 1
        self._round_paid, self._round_seconds, self._round_step, self._round_episodes = 0, 0.0, 0, 0
        return out

    def _demo_count(self) -> int:
        return 0 if self.demos is None else len(self.demos)

    def _training_set(self) -> tuple[Tensor, Tensor]:
        obs, act = [self.dataset.obs[: self.n_labels]], [self.dataset.action[: self.n_labels]]
        if self.demos is not None:
            obs.insert(0, self.demos.obs)
            act.insert(0, self.demos.action)
        return (torch.as_tensor(np.concatenate(obs), device=self.device),
                torch.as_tensor(np.concatenate(act), device=self.device))

    def _fit(self) -> dict[str, float]:
        """``epochs`` passes of minibatch Adam over all of D (a fresh network first if ``retrain='scratch'``)."""
        c = self.config
        obs, act = self._training_set()
        if c.retrain == "scratch":
            self._init_seed += 1
            self._build_policy()
        self.policy.normalizer.fit(obs)
        n = obs.shape[0]
        batch = min(c.batch_size, n)
        total, count = 0.0, 0
        steps = c.epochs * (n // batch)
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr
        self.policy.train()
        for _ in range(c.epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n - batch + 1, batch):  # drop the last partial batch (imitation library)
                idx = perm[start:start + batch]
                loss = self.policy.loss(obs[idx], act[idx], c.ent_weight)
                if c.l2_weight > 0:
                    loss = loss + c.l2_weight * sum((p**2).sum() for p in self.policy.parameters())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.lr_schedule == "cosine":
                    for group in self.optimizer.param_groups:
                        group["lr"] = 0.5 * c.lr * (1.0 + math.cos(math.pi * count / steps))
                self.optimizer.step()
                total += float(loss.detach())
                count += 1
        self.policy.eval()
        self._fast = None
        with torch.no_grad():
            mean = self.policy.act(obs, deterministic=True)
            low, high = (torch.as_tensor(b, device=self.device) for b in (self.low, self.high))
            mse = float(F.mse_loss(mean.clamp(low, high), act))
        self.fitted_on = n
        self.fits += 1
        return {"policy_loss": total / max(count, 1), "policy_mse": mse, "fits": float(self.fits),
                "dataset_size": float(n)}

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.bit_generator.state, "generator": generator_state(self.generator),
                "init_seed": self._init_seed, "n_labels": self.n_labels, "round": self.round,
                "fitted_on": self.fitted_on, "fits": self.fits, "env_step": self.env_step,
                "expert_seconds": self.expert_seconds, "labels_reused": self.labels_reused,
                "round_paid": self._round_paid, "round_seconds": self._round_seconds, "round_step": self._round_step,
                "round_episodes": self._round_episodes,
                "expert": self.expert.state_dict() if self.expert is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._init_seed = state["init_seed"]
        if self.config.retrain == "scratch":
            self._build_policy()  # same architecture; the weights follow
        self.policy.load_state_dict(state["policy"])
        self._fast = None
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        load_generator_state(self.generator, state["generator"])
        self.n_labels, self.round, self.fitted_on = state["n_labels"], state["round"], state["fitted_on"]
        self.fits, self.env_step, self.expert_seconds = state["fits"], state["env_step"], state["expert_seconds"]
        self.labels_reused = state["labels_reused"]
        self._round_paid, self._round_seconds = state["round_paid"], state["round_seconds"]
        self._round_step, self._round_episodes = state["round_step"], state["round_episodes"]
        if self.dataset.path is not None and self.n_labels > len(self.dataset):
            raise ValueError(f"the checkpoint counts {self.n_labels} labels but the label data set holds only "
                             f"{len(self.dataset)}: was the run's labels/ directory changed?")
        if self.expert is not None and state.get("expert"):
            self.expert.load_state_dict(state["expert"])


class DAggerAgent(ImitationAgent):
    """DAgger: the expert labels the learner's own observations; beta_i mixes in the expert's actions."""

    config: DAggerConfig
    SCHEDULES = ("first", "exp", "linear", "constant")

    def __init__(self, env: gymnasium.Env, config: DAggerConfig, seed: int = 0, **kwargs: Any) -> None:
        if config.beta_schedule not in self.SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(self.SCHEDULES)}, got {config.beta_schedule!r}")
        if not 0.0 <= config.beta_p <= 1.0 or config.beta_rounds < 1:
            raise ValueError("beta_p must be in [0, 1] and beta_rounds >= 1")
        super().__init__(env, config, seed, **kwargs)

    def beta(self, i: int) -> float:
        """beta_i: the probability of executing the expert's action in round i (1-based)."""
        c = self.config
        if c.beta_schedule == "first":
            return 1.0 if i == 1 else 0.0
        if c.beta_schedule == "exp":
            return float(c.beta_p ** (i - 1))
        if c.beta_schedule == "linear":
            return float(min(1.0, max(0.0, 1.0 - (i - 1) / c.beta_rounds)))
        return float(c.beta_p)  # constant


class BCAgent(ImitationAgent):
    """Behaviour cloning: the expert acts and labels (beta = 1); pi_theta regresses on its labels."""

    config: BCConfig

    def beta(self, i: int) -> float:
        return 1.0
