"""Fitting an ``EnsembleModel`` to transitions: bootstrap, hold-out, early stopping, elites."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from modelrl.models.ensemble import EnsembleModel


def _as_2d(name: str, x, device: torch.device) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(device=device, dtype=torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(1)
    if t.ndim != 2:
        raise ValueError(f"{name} must be [N, dim] (or [N] for one dimension), got shape {tuple(t.shape)}")
    return t


def _check_finite(name: str, t: Tensor) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = torch.nonzero(bad.reshape(t.shape[0], -1).any(1)).flatten()
        first = int(rows[0])
        raise ValueError(
            f"{name} contains NaN or inf in {rows.numel()} row(s), first at row {first}: {t[first].tolist()}"
        )


class ModelTrainer:
    """Fits an ``EnsembleModel`` by maximum likelihood (probabilistic) or least squares.

    Each ``fit``: a fresh hold-out split; normalisers fitted on the training split; each member
    trains on its own bootstrap resample of the training split (PETS); Adam; after every epoch
    the hold-out MSE (normalised targets) of every member is measured and each member keeps
    its own best weights (a member's snapshot is taken when its error improves by more than
    ``improvement_threshold``, relative); training stops after ``patience`` epochs in which no
    member improved; the ``num_elites`` members with the lowest hold-out MSE become elites.
    The model's weights carry over between ``fit`` calls (online model learning).
    """

    def __init__(
        self,
        model: EnsembleModel,
        lr: float = 7.5e-4,  # mbrl-lib conf/overrides/pets_cartpole.yaml: model_lr
        weight_decay: float | Sequence[float] = 3e-5,  # mbrl-lib pets_cartpole.yaml: model_wd (or one per layer)
        batch_size: int = 256,  # mbrl-lib pets_cartpole.yaml: model_batch_size
        holdout_ratio: float = 0.2,  # mbrl-lib pets_inv_pendulum.yaml: validation_ratio
        max_epochs: int = 25,  # mbrl-lib pets_cartpole.yaml: num_epochs_train_model (per fit)
        patience: int = 5,  # ours: mbrl-lib's 25 equals its epoch cap there, so never stops early
        improvement_threshold: float = 0.01,  # mbrl-lib DynamicsModelTrainer.maybe_get_best_weights
        bootstrap: bool = True,  # PETS: each member on its own resample (ignored for one member)
        max_holdout: int | None = None,  # ours: no cap (MBPO's BNN.train: max_logging 5000)
        keep_pre_fit: bool = True,  # mbrl-lib DynamicsModelTrainer.train scores the model before the first epoch
        seed: int | None = None,
    ) -> None:
        """``max_holdout`` caps the hold-out rows (min(ratio N, cap)); ``keep_pre_fit``: the weights before the
        fit are a member's first best, so a member whose error never improves keeps them (mbrl-lib); False: the
        first best is infinite, so every member takes the weights of its best epoch of this fit (MBPO's BNN,
        ``_start_train``: snapshots start at 1e10)."""
        if batch_size < 1 or max_epochs < 1 or patience < 1:
            raise ValueError(f"need batch_size, max_epochs, patience >= 1; got {batch_size}, {max_epochs}, {patience}")
        if not 0.0 <= holdout_ratio < 1.0:
            raise ValueError(f"holdout_ratio must be in [0, 1), got {holdout_ratio}")
        if lr <= 0 or min(np.atleast_1d(weight_decay)) < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr} and {weight_decay}")
        self.model = model
        self.batch_size, self.holdout_ratio = int(batch_size), float(holdout_ratio)
        self.max_epochs, self.patience = int(max_epochs), int(patience)
        self.improvement_threshold, self.bootstrap = float(improvement_threshold), bool(bootstrap)
        if max_holdout is not None and max_holdout < 0:
            raise ValueError(f"max_holdout must be >= 0 or None, got {max_holdout}")
        self.max_holdout, self.keep_pre_fit = max_holdout, bool(keep_pre_fit)
        self.rng = np.random.default_rng(seed)
        self.optimizer = torch.optim.Adam(model.parameter_groups(weight_decay), lr=lr)
        self.fits = 0
        self.total_epochs = 0
        self.holdout_idx: np.ndarray | None = None  # rows of the last fit's data held out (for diagnostics)

    # -- data ---------------------------------------------------------------------------------
    def _prepare(self, obs, action, next_obs, reward, terminated) -> tuple[Tensor, Tensor, Tensor | None]:
        """Validated inputs ``[s, a]`` and targets ``[s' - s, (r)]`` in real units, plus flags."""
        m, dev = self.model, self.model.device
        obs, action, next_obs = (_as_2d(k, v, dev)
                                 for k, v in (("obs", obs), ("action", action), ("next_obs", next_obs)))
        n = obs.shape[0]
        for name, t, dim in (("obs", obs, m.obs_dim), ("action", action, m.action_dim),
                             ("next_obs", next_obs, m.obs_dim)):
            if t.shape != (n, dim):
                raise ValueError(f"{name} must have shape [{n}, {dim}], got {tuple(t.shape)}")
        arrays = [("obs", obs), ("action", action), ("next_obs", next_obs)]
        if m.learn_reward:
            if reward is None:
                raise ValueError("this model learns the reward: pass reward")
            reward = _as_2d("reward", reward, dev)
            if reward.shape != (n, 1):
                raise ValueError(f"reward must have shape [{n}], got {tuple(reward.shape)}")
            arrays.append(("reward", reward))
        flags = None
        if m.learn_termination:
            if terminated is None:
                raise ValueError("this model learns termination: pass terminated")
            flags = torch.as_tensor(np.asarray(terminated) if not isinstance(terminated, Tensor) else terminated)
            flags = flags.to(device=dev, dtype=torch.float32).reshape(-1)
            if flags.shape != (n,):
                raise ValueError(f"terminated must have shape [{n}], got {tuple(flags.shape)}")
            arrays.append(("terminated", flags))
        for name, t in arrays:
            _check_finite(name, t)
        x = torch.cat([obs, action], dim=1)
        y = torch.cat([next_obs - obs] + ([reward] if m.learn_reward else []), dim=1)
        return x, y, flags

    # -- training -----------------------------------------------------------------------------
    def fit(self, obs, action, next_obs, reward=None, terminated=None) -> dict:
        """Train on transitions (numpy or torch, ``[N, dim]``). Returns metrics: ``train_loss``
        (last epoch, mean per member), ``holdout_mse`` (best, per member, normalised targets),
        ``holdout_mse_real`` (elite mean, real units of ``s' - s``), ``epochs``, ``elites``."""
        model = self.model
        x, y, flags = self._prepare(obs, action, next_obs, reward, terminated)
        n = x.shape[0]
        n_hold = int(round(self.holdout_ratio * n)) if n >= 2 else 0
        n_hold = min(n_hold, n - 1, self.max_holdout if self.max_holdout is not None else n)
        perm = torch.as_tensor(self.rng.permutation(n), device=x.device)
        hold, train = perm[:n_hold], perm[n_hold:]
        n_train = train.numel()
        self.holdout_idx = hold.cpu().numpy()

        model.input_normalizer.fit(x[train])
        model.target_normalizer.fit(y[train])
        xn, yn = model.input_normalizer.normalize(x), model.target_normalizer.normalize(y)
        # With no hold-out, scores (early stopping, elites) fall back to the training split.
        score_x, score_y = (xn[hold], yn[hold]) if n_hold > 0 else (xn[train], yn[train])

        e = model.ensemble_size
        if self.bootstrap and e > 1:
            member_rows = self.rng.integers(0, n_train, size=(e, n_train))  # with replacement, per member
        else:
            member_rows = np.broadcast_to(np.arange(n_train), (e, n_train))
        member_rows = train.cpu().numpy()[member_rows]

        best = model.member_mse(score_x, score_y)
        if not self.keep_pre_fit:
            best = torch.full_like(best, float("inf"))
        best_state = {k: v.detach().clone() for k, v in model.named_parameters()}
        stale, epochs, train_loss = 0, 0, float("nan")
        for _ in range(self.max_epochs):
            model.train()
            rows = torch.as_tensor(self.rng.permuted(member_rows, axis=1), device=x.device)  # own order per member
            losses = []
            for start in range(0, n_train, self.batch_size):
                idx = rows[:, start:start + self.batch_size]  # [E, b]
                total, per_member = model.loss(xn[idx], yn[idx], flags[idx] if flags is not None else None)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                losses.append(per_member.mean())
            train_loss = float(torch.stack(losses).mean())
            epochs += 1
            model.eval()
            score = model.member_mse(score_x, score_y)
            improved = ((best - score) / best.clamp_min(1e-12) > self.improvement_threshold) | torch.isinf(best)
            if improved.any():
                best = torch.where(improved, score, best)
                self._snapshot(best_state, improved)
                stale = 0
            else:
                stale += 1
            if stale >= self.patience:
                break
        self._restore(best_state)
        model.eval()
        model.set_elites(torch.argsort(best)[: model.num_elites])
        self.fits += 1
        self.total_epochs += epochs
        return {
            "train_loss": train_loss,
            "holdout_mse": best.cpu().numpy(),
            "holdout_mse_real": self._real_mse(score_x, score_y),
            "epochs": epochs,
            "elites": model.elite_idx.cpu().numpy(),
            "num_train": n_train,
            "num_holdout": n_hold,
        }

    @torch.no_grad()
    def _snapshot(self, best_state: dict[str, Tensor], improved: Tensor) -> None:
        """Copy the current weights of the improved members into ``best_state``."""
        for name, p in self.model.named_parameters():
            best_state[name][improved] = p.detach()[improved]

    @torch.no_grad()
    def _restore(self, best_state: dict[str, Tensor]) -> None:
        for name, p in self.model.named_parameters():
            p.copy_(best_state[name])

    @torch.no_grad()
    def _real_mse(self, xn: Tensor, yn: Tensor) -> float:
        """Hold-out MSE of the elites' mean prediction of ``s' - s`` in real units."""
        model = self.model
        mean, _ = model.forward(xn, model.elite_idx)
        pred = model.target_normalizer.denormalize(mean.mean(0)[:, : model.gauss_dim])
        true = model.target_normalizer.denormalize(yn)
        s = model.obs_dim
        return float(((pred[:, :s] - true[:, :s]) ** 2).mean())

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A snapshot of optimiser state, RNG state and counters (the model's weights are in
        ``model.state_dict()``); copied, so training on does not change a saved state."""
        return {
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "rng": self.rng.bit_generator.state,
            "fits": self.fits,
            "total_epochs": self.total_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.fits, self.total_epochs = int(state["fits"]), int(state["total_epochs"])
