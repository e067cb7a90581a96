"""Linear-quadratic regulator: the exact planner for x' = A x + B u with cost sum x'Qx + u'Ru.

Finite horizon: the backward Riccati recursion. Infinite horizon: the stationary solution of
the discrete algebraic Riccati equation (scipy). Both give u = -K x; with action bounds the
action is clamped, which keeps it feasible but no longer optimal.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from modelrl.envs.true_dynamics import LinearDynamics
from modelrl.planners.base import Planner


def _check_matrices(A, B, Q, R, Qf=None) -> tuple[np.ndarray, ...]:
    """The matrices as float64 arrays; ValueError on shape mismatch or a non-PD R."""
    A, B, Q, R = (np.atleast_2d(np.asarray(m, dtype=np.float64)) for m in (A, B, Q, R))
    if B.ndim != 2:
        raise ValueError(f"B must be a matrix [n, m], got shape {B.shape}")
    n, m = B.shape
    if A.shape != (n, n) or Q.shape != (n, n) or R.shape != (m, m):
        raise ValueError(
            f"LQR needs A[n,n], B[n,m], Q[n,n], R[m,m]; got A{A.shape}, B{B.shape}, Q{Q.shape}, R{R.shape}"
        )
    Qf = np.zeros((n, n)) if Qf is None else np.atleast_2d(np.asarray(Qf, dtype=np.float64))
    if Qf.shape != (n, n):
        raise ValueError(f"Qf must be [n, n] = {(n, n)}, got {Qf.shape}")
    for name, mat in (("A", A), ("B", B), ("Q", Q), ("R", R), ("Qf", Qf)):
        if not np.all(np.isfinite(mat)):
            raise ValueError(f"{name} contains NaN or inf")
    Q, R, Qf = (0.5 * (M + M.T) for M in (Q, R, Qf))
    if np.linalg.eigvalsh(R).min() <= 0:
        raise ValueError("R must be symmetric positive definite")
    if np.linalg.eigvalsh(Q).min() < -1e-12 * max(1.0, np.abs(Q).max()):
        raise ValueError("Q must be symmetric positive semi-definite")
    return A, B, Q, R, Qf


def riccati(A, B, Q, R, horizon: int, Qf=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Finite-horizon discrete Riccati recursion for sum_{t<H} x'Qx + u'Ru + x_H' Qf x_H.

    Returns ``(K, P)``: gains K_0..K_{H-1} (u_t = -K_t x_t) and cost-to-go matrices
    P_0..P_H (P_H = Qf, default zero), all float64 numpy arrays.
    """
    A, B, Q, R, Qf = _check_matrices(A, B, Q, R, Qf)
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    P = Qf
    gains: list[np.ndarray] = []
    costs: list[np.ndarray] = [P]
    for _ in range(int(horizon)):
        BtP = B.T @ P
        K = np.linalg.solve(R + BtP @ B, BtP @ A)
        Acl = A - B @ K
        # Joseph form: a sum of PSD terms, so P stays symmetric PSD in floating point.
        P = Q + K.T @ R @ K + Acl.T @ P @ Acl
        P = 0.5 * (P + P.T)
        gains.append(K)
        costs.append(P)
    return gains[::-1], costs[::-1]


def dare(A, B, Q, R) -> tuple[np.ndarray, np.ndarray]:
    """Stationary LQR: ``(K, P)`` from scipy's DARE solver, K = (R + B'PB)^-1 B'PA.

    Raises ValueError when the DARE has no stabilising solution (e.g. (A, B) not stabilisable).
    """
    A, B, Q, R, _ = _check_matrices(A, B, Q, R)
    try:
        P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as err:
        raise ValueError(
            f"the discrete algebraic Riccati equation has no stabilising solution ({err}); "
            "is (A, B) stabilisable and (A, Q) detectable?"
        ) from err
    if not np.all(np.isfinite(P)):
        raise ValueError("the DARE solution is not finite; is (A, B) stabilisable?")
    P = 0.5 * (P + P.T)
    K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    radius = np.abs(np.linalg.eigvals(A - B @ K)).max()
    if radius >= 1.0:
        raise ValueError(
            f"LQR closed loop A - BK is not stable (spectral radius {radius:.6g}); "
            "(A, B) is not stabilisable or (A, Q) not detectable"
        )
    return K, P


class LQR(Planner):
    """LQR as a Planner on ``LinearDynamics(A, B, Q, R)``: u = -K x, cost sum x'Qx + u'Ru.

    ``horizon=None``: infinite horizon (DARE), ``act(x) = -K x`` and ``plan`` rolls the
    stationary feedback out for ``plan_horizon`` steps. ``horizon=H``: finite-horizon Riccati
    with terminal weight ``Qf`` (default zero: the reward of the final state x_H is not
    counted), ``plan`` returns the H actions of the time-varying feedback rolled out on the
    model and ``act`` returns u_0 = -K_0 x (receding horizon). With finite ``action_space``
    bounds the actions are clamped; the result is then feasible but no longer optimal.
    """

    def __init__(
        self,
        A,
        B,
        Q,
        R,
        horizon: int | None = None,
        action_space=None,
        dtype: torch.dtype = torch.float64,
        *,
        Qf=None,
        plan_horizon: int = 50,  # ours: length of plan() for the infinite-horizon case
        device: torch.device | str = "cpu",
        seed: int | None = None,
        gamma: float = 1.0,
    ) -> None:
        A, B, Q, R, Qf_ = _check_matrices(A, B, Q, R, Qf)
        if gamma != 1.0:
            raise ValueError("LQR solves the undiscounted problem; gamma must be 1")
        n, m = B.shape
        if action_space is None:
            action_space = (np.full(m, -np.inf), np.full(m, np.inf))
        if horizon is None:
            if Qf is not None:
                raise ValueError("Qf applies to a finite horizon only; pass horizon=H")
            if not isinstance(plan_horizon, (int, np.integer)) or plan_horizon < 1:
                raise ValueError(f"plan_horizon must be an integer >= 1, got {plan_horizon!r}")
            K, P = dare(A, B, Q, R)
            self.gains: np.ndarray | list[np.ndarray] = K
            self.P: np.ndarray | list[np.ndarray] = P
            base_horizon = int(plan_horizon)
        else:
            if not isinstance(horizon, (int, np.integer)) or horizon < 1:
                raise ValueError(f"horizon must be an integer >= 1 or None, got {horizon!r}")
            self.gains, self.P = riccati(A, B, Q, R, int(horizon), Qf_)
            base_horizon = int(horizon)
        super().__init__(
            LinearDynamics(A, B, Q, R), action_space, base_horizon, gamma=gamma, seed=seed,
            device=device, dtype=dtype, state_dim=n,
        )
        if self.action_dim != m:
            raise ValueError(f"action_space has {self.action_dim} dimensions, B has {m} columns")
        self.infinite = horizon is None
        self.A, self.B, self.Q, self.R = A, B, Q, R
        gains = [self.gains] * base_horizon if isinstance(self.gains, np.ndarray) else self.gains  # infinite: one
        self._K = torch.as_tensor(np.stack(gains), dtype=dtype, device=self.device)
        self._A = torch.as_tensor(A, dtype=dtype, device=self.device)
        self._B = torch.as_tensor(B, dtype=dtype, device=self.device)

    def cost(self, x0) -> float:
        """Optimal cost x0' P x0 from ``x0`` (P_0 for a finite horizon), ignoring action bounds."""
        x = np.asarray(self._one_state(x0).cpu(), dtype=np.float64)
        P = self.P if self.infinite else self.P[0]
        return float(x @ P @ x)

    def act(self, state) -> np.ndarray:
        """u = -K_0 x, clamped to the action bounds (``[A]``, or ``[B, A]`` for states ``[B, S]``)."""
        x, single = self._check_state(state)
        u = self.clamp(x @ -self._K[0].T)
        return (u[0] if single else u).cpu().numpy()

    def _one_state(self, state) -> Tensor:
        x, single = self._check_state(state)
        if not single:
            raise ValueError(f"cost takes one state [S], got a batch of shape {tuple(x.shape)}")
        return x[0]

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        x, actions = state, []  # [B, S]: the feedback rolled out for every problem at once
        for t in range(self.horizon):
            u = self.clamp(x @ -self._K[t].T)
            actions.append(u)
            x = x @ self._A.T + u @ self._B.T
        return torch.stack(actions)
