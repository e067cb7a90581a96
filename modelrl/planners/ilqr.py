"""Iterative LQR (iLQR) with box-constrained controls, for any differentiable ``Dynamics``.

Each iteration linearises the dynamics and takes a second-order expansion of the cost
c = -r around the current trajectory (derivatives by autograd, batched over the horizon),
solves the resulting LQ problem by a backward Riccati pass and moves the trajectory by a
batched line search over step sizes. References:

- Tassa, Erez, Todorov 2012, "Synthesis and stabilization of complex behaviors through online
  trajectory optimization" (IROS): the Levenberg-Marquardt regularisation of V_xx, its schedule
  and the line search on the feed-forward term.
- Tassa, Mansard, Todorov 2014, "Control-limited differential dynamic programming" (ICRA):
  box-DDP, i.e. the feed-forward term from a box-constrained QP solved by projected Newton,
  with feedback gains zeroed on clamped control dimensions.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

from modelrl.planners.base import Planner, checked_step, non_finite_rollout_error
from modelrl.types import Dynamics


def _cholesky(H: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of H, or None when H is not positive definite."""
    try:
        return np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None


def _chol_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.solve(L.T, np.linalg.solve(L, b))


def box_qp(
    H: np.ndarray,
    g: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    x0: np.ndarray | None = None,
    max_iter: int = 100,  # boxQP released with Tassa, Mansard, Todorov 2014: maxIter
    min_grad: float = 1e-8,  # same source: minGrad
    min_rel_improve: float = 1e-8,  # same source: minRelImprove
    step_dec: float = 0.6,  # same source: stepDec
    min_step: float = 1e-22,  # same source: minStep
    armijo: float = 0.1,  # same source: Armijo constant
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Minimise 0.5 x'Hx + g'x subject to lower <= x <= upper by projected Newton.

    Algorithm 1 of Tassa, Mansard, Todorov 2014: Newton steps on the free dimensions, a
    projected Armijo line search, the clamped set re-estimated each iteration. Returns
    ``(x, free, L)``: the minimiser, a bool mask of the dimensions not clamped at a bound, and
    the Cholesky factor of H restricted to the free dimensions (None when that block is not
    positive definite, i.e. the QP is not convex there and the caller must regularise).
    """
    x = np.zeros_like(g) if x0 is None else np.asarray(x0, dtype=g.dtype)
    x = np.clip(x, lower, upper)

    def value(v: np.ndarray) -> float:
        return float(0.5 * v @ H @ v + g @ v)

    def free_set(v: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return ~(((v <= lower) & (grad > 0)) | ((v >= upper) & (grad < 0)))

    f = value(x)
    old_free: np.ndarray | None = None
    chol: np.ndarray | None = None
    for _ in range(max_iter):
        grad = g + H @ x
        free = free_set(x, grad)
        if not free.any():
            break
        if old_free is None or not np.array_equal(free, old_free):
            chol = _cholesky(H[np.ix_(free, free)])
            if chol is None:
                return x, free, None
        old_free = free
        grad_free = grad[free]
        if np.linalg.norm(grad_free) < min_grad:
            break
        direction = np.zeros_like(x)
        assert chol is not None  # factored above for this free set
        direction[free] = -_chol_solve(chol, grad_free)
        if direction @ grad >= 0:
            break
        step, improved = 1.0, False
        while step >= min_step:
            candidate = np.clip(x + step * direction, lower, upper)
            f_new = value(candidate)
            if f - f_new >= armijo * float(grad @ (x - candidate)):
                improved = True
                break
            step *= step_dec
        if not improved:
            break
        rel = (f - f_new) / max(abs(f), 1e-300)
        x, f = candidate, f_new
        if rel < min_rel_improve:
            break
    # The gains must match the active set at the returned point, so factor that block.
    free = free_set(x, g + H @ x)
    return x, free, _cholesky(H[np.ix_(free, free)]) if free.any() else np.zeros((0, 0))


class ILQR(Planner):
    """iLQR maximising sum_t gamma^t r(x_t, u_t) over the horizon (cost c = -r).

    Derivatives f_x, f_u, l_x, l_u, l_xx, l_uu, l_ux come from autograd, batched over the H
    time points. ``derivatives="autograd"`` (default) differentiates the sum over the batch,
    which gives every time point's derivative at once because the rows of a batch do not
    interact (the ``Dynamics`` contract); ``"vmap"`` uses ``torch.func.vmap`` of ``jacrev`` on a
    single-sample wrapper and falls back to autograd, with a warning, where the dynamics cannot
    be vmapped. Dynamics second derivatives are dropped (iLQR, not DDP). The Riccati pass runs
    in float64 numpy; the rollouts run in the planner's dtype and device. Box bounds on actions
    follow box-DDP; infinite bounds give plain iLQR. A model's ``terminal`` flag is ignored: the
    objective must stay smooth. ``last_info`` holds the cost and iteration counts of the last plan.
    """

    uses_autograd = True  # derivatives by autograd inside _optimize
    batched = False  # one problem at a time (its line search and regularisation are per problem)

    def __init__(
        self,
        dynamics: Dynamics,
        action_space,
        # ours, tuned closed loop on Pendulum-v1 (10-40 episodes): H = 20 (1 s) scored best of 15-40;
        # longer horizons land in worse local optima of the non-smooth swing-up cost.
        horizon: int = 20,
        # ours, same tuning: with the warm start 2, 3, 5 iterations per step score alike; 3 for margin.
        iterations: int = 3,
        mu_init: float = 1.0,  # Tassa et al. 2014 reference code default lambdaInit
        mu_min: float = 1e-6,  # Tassa, Erez, Todorov 2012, Sec. II-F: mu_min = 1e-6
        mu_max: float = 1e10,  # Tassa et al. 2014 reference code default lambdaMax
        mu_factor: float = 1.6,  # Delta_0 of Tassa 2012's schedule; 1.6 as in Tassa et al. 2014 reference code
        line_search_steps: int = 10,  # ours: alpha = 1, 1/2, ..., 1/512, evaluated in one batched rollout
        tol: float = 1e-6,  # ours: relative cost change at which to stop (float32 resolution is ~1e-7)
        derivatives: str = "autograd",  # ours: "autograd" (faster, see _derivatives_autograd) or "vmap"
        **kwargs,
    ) -> None:
        super().__init__(dynamics, action_space, horizon, **kwargs)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if not 0.0 <= mu_init <= mu_max or mu_min < 0 or mu_factor <= 1.0:
            raise ValueError(
                f"need 0 <= mu_init <= mu_max, mu_min >= 0 and mu_factor > 1; got mu_init={mu_init}, "
                f"mu_min={mu_min}, mu_max={mu_max}, mu_factor={mu_factor}"
            )
        if line_search_steps < 1:
            raise ValueError(f"line_search_steps must be >= 1, got {line_search_steps}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if derivatives not in ("autograd", "vmap"):
            raise ValueError(f"derivatives must be 'autograd' or 'vmap', got {derivatives!r}")
        self.iterations = int(iterations)
        self.mu_init, self.mu_min, self.mu_max, self.mu_factor = mu_init, mu_min, mu_max, mu_factor
        self.tol = float(tol)
        self.alphas = 0.5 ** torch.arange(line_search_steps, dtype=self.dtype, device=self.device)
        self.discount = self.gamma ** torch.arange(self.horizon, dtype=self.dtype, device=self.device)
        self.bounded = bool(torch.isfinite(self.low).any() or torch.isfinite(self.high).any())
        self._use_vmap = derivatives == "vmap"
        self._batched_grads = True
        self._low_np, self._high_np = self.low.cpu().double().numpy(), self.high.cpu().double().numpy()
        self.last_info: dict[str, float] = {}

    # -- trajectory and derivatives ---------------------------------------------------------
    def _trajectory(self, state: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """States ``[H+1, S]`` and total cost of one action sequence ``[H, A]``."""
        xs = [state]
        cost = torch.zeros((), dtype=self.dtype, device=self.device)
        x = state[None]
        for t in range(self.horizon):
            u = actions[t][None]
            x, r = checked_step(self.dynamics, x, u) if t == 0 else self.dynamics.step(x, u)
            cost = cost - self.discount[t] * r[0]
            xs.append(x[0])
        return torch.stack(xs), cost

    def _derivatives(self, xs: Tensor, us: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """f_z [H, S, S+A], l_z [H, S+A], l_zz [H, S+A, S+A] of the cost at z = (x, u), float64 numpy."""
        z = torch.cat([xs, us], dim=-1).detach()
        with torch.enable_grad():
            if self._use_vmap:
                try:
                    fz, lz, lzz = self._derivatives_vmap(z, xs.shape[-1])
                except Exception as err:  # a dynamics that vmap cannot trace (in-place ops, .item(), ...)
                    warnings.warn(
                        f"ILQR: torch.func.vmap failed on this dynamics ({type(err).__name__}: {err}); "
                        "using batched torch.autograd.grad instead",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    self._use_vmap = False
                    fz, lz, lzz = self._derivatives_autograd(z, xs.shape[-1])
            else:
                fz, lz, lzz = self._derivatives_autograd(z, xs.shape[-1])
        w = self.discount.cpu().double().numpy()[:, None]
        f_z, l_z, l_zz = (v.detach().cpu().double().numpy() for v in (fz, lz, lzz))
        return f_z, -w * l_z, -w[:, :, None] * l_zz

    def _derivatives_vmap(self, z: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
        from torch.func import grad, jacrev, vmap

        def step(zz: Tensor) -> tuple[Tensor, Tensor]:
            nx, r = self.dynamics.step(zz[None, :s], zz[None, s:])
            return nx[0], r[0]

        def reward_grad(zz: Tensor) -> tuple[Tensor, Tensor]:
            g = grad(lambda v: step(v)[1])(zz)
            return g, g

        fz = vmap(jacrev(lambda zz: step(zz)[0]))(z)
        lzz, lz = vmap(jacrev(reward_grad, has_aux=True))(z)
        return fz, lz, lzz

    def _derivatives_autograd(self, z: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
        # Each sample's outputs depend on its own input only, so the gradient of a sum over the
        # batch gives every sample's derivative at once; the output dimensions go together
        # through one batched backward pass (``is_grads_batched``).
        z = z.clone().requires_grad_(True)
        nx, r = self.dynamics.step(z[:, :s], z[:, s:])
        fz = self._jacobian_rows(nx, z)
        if not r.requires_grad:
            return fz, torch.zeros_like(z), torch.zeros(z.shape + z.shape[-1:], dtype=z.dtype, device=z.device)
        (lz,) = torch.autograd.grad(r.sum(), z, create_graph=True)
        if not lz.requires_grad:  # reward linear in (x, u)
            return fz, lz, torch.zeros(z.shape + z.shape[-1:], dtype=z.dtype, device=z.device)
        return fz, lz, self._jacobian_rows(lz, z)

    def _jacobian_rows(self, out: Tensor, z: Tensor) -> Tensor:
        """d out[h, i] / d z[h] for all h, i: ``[H, O, Z]``; one batched backward pass, else O passes."""
        n_out = out.shape[-1]
        zeros = torch.zeros(out.shape + z.shape[-1:], dtype=z.dtype, device=z.device)
        if not out.requires_grad:
            return zeros
        if self._batched_grads:
            eye = torch.eye(n_out, dtype=out.dtype, device=out.device)[:, None, :].expand(n_out, *out.shape)
            try:
                (rows,) = torch.autograd.grad(
                    out, z, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
                return zeros if rows is None else rows.transpose(0, 1)
            except Exception:  # a backward formula without a batching rule
                self._batched_grads = False
        for i in range(n_out):
            (gi,) = torch.autograd.grad(out[:, i].sum(), z, retain_graph=True, allow_unused=True)
            if gi is not None:
                zeros[:, i] = gi
        return zeros

    # -- backward pass (Riccati recursion with box-QP) --------------------------------------
    def _backward(
        self, us: np.ndarray, fz: np.ndarray, lz: np.ndarray, lzz: np.ndarray, mu: float, k_prev: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Gains k [H, A], K [H, A, S] and the expected-change terms (sum k'Q_u, 1/2 sum k'Q_uu k).

        Runs in float64 numpy: the matrices are S x S, where per-operation dispatch of torch
        would dominate, and float64 keeps the recursion well conditioned for float32 models.
        Regularisation as in Tassa 2012, eq. (10): mu I is added to V'_xx inside Q_uu and Q_ux,
        which keeps the new trajectory close to the old one in state space. Returns None when
        the regularised Q_uu is not positive definite at some step.
        """
        s, a = fz.shape[1], us.shape[1]
        fx, fu = fz[:, :, :s], fz[:, :, s:]
        lx, lu = lz[:, :s], lz[:, s:]
        lxx, luu, lux = lzz[:, :s, :s], lzz[:, s:, s:], lzz[:, s:, :s]
        lower, upper = self._low_np - us, self._high_np - us
        vx, vxx = np.zeros(s), np.zeros((s, s))
        ks, Ks = np.zeros((self.horizon, a)), np.zeros((self.horizon, a, s))
        dv1 = dv2 = 0.0
        for t in range(self.horizon - 1, -1, -1):
            fxT, fuT = fx[t].T, fu[t].T
            vxx_fx, vxx_fu = vxx @ fx[t], vxx @ fu[t]
            qx = lx[t] + fxT @ vx
            qu = lu[t] + fuT @ vx
            qxx = lxx[t] + fxT @ vxx_fx
            quu = luu[t] + fuT @ vxx_fu
            qux = lux[t] + fuT @ vxx_fx
            quu_reg = 0.5 * (quu + quu.T) + mu * (fuT @ fu[t])
            qux_reg = qux + mu * (fuT @ fx[t])
            solved = self._solve_control(quu_reg, qu, qux_reg, lower[t], upper[t], k_prev[t])
            if solved is None:
                return None
            k, K = solved
            ks[t], Ks[t] = k, K
            dv1 += float(k @ qu)
            dv2 += float(0.5 * k @ quu @ k)
            # Tassa 2012, eq. (11): the value update that stays exact when k, K are not the
            # unregularised minimisers (regularisation, clamping).
            KT = K.T
            vx = qx + KT @ (quu @ k) + KT @ qu + qux.T @ k
            vxx = qxx + KT @ quu @ K + KT @ qux + qux.T @ K
            vxx = 0.5 * (vxx + vxx.T)
        return ks, Ks, dv1, dv2

    def _solve_control(
        self, quu: np.ndarray, qu: np.ndarray, qux: np.ndarray, lower: np.ndarray, upper: np.ndarray,
        k_prev: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Feed-forward k and feedback K of the local QP in the control deviation du."""
        if not self.bounded:
            chol = _cholesky(quu)
            if chol is None:
                return None
            sol = _chol_solve(chol, np.concatenate([qu[:, None], qux], axis=1))
            return -sol[:, 0], -sol[:, 1:]
        if quu.shape[0] == 1:
            # One control: projected Newton reduces to clamping the Newton step.
            h = float(quu[0, 0])
            if not h > 0:
                return None
            k_free = -qu / h
            k = np.clip(k_free, lower, upper)
            unclamped = bool(lower[0] <= k_free[0] <= upper[0])
            return k, (-qux / h if unclamped else np.zeros_like(qux))
        k, free, chol = box_qp(quu, qu, lower, upper, k_prev)
        if chol is None:
            return None
        K = np.zeros_like(qux)
        if free.any():
            K[free] = -_chol_solve(chol, qux[free])
        return k, K

    # -- the optimiser ----------------------------------------------------------------------
    def _line_search(
        self, state: Tensor, xs: Tensor, us: Tensor, k: Tensor, K: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Roll out u = clamp(u_bar + alpha k + K (x - x_bar)) for every alpha at once.

        Returns states [N, H+1, S], actions [N, H, A] and costs [N] for the N step sizes.
        """
        n = self.alphas.shape[0]
        x = state.expand(n, -1)
        states, actions = [x], []
        cost = torch.zeros(n, dtype=self.dtype, device=self.device)
        for t in range(self.horizon):
            u = us[t] + self.alphas[:, None] * k[t] + (x - xs[t]) @ K[t].T
            u = self.clamp(u)
            x, r = checked_step(self.dynamics, x, u) if t == 0 else self.dynamics.step(x, u)
            cost = cost - self.discount[t] * r
            states.append(x)
            actions.append(u)
        return torch.stack(states, dim=1), torch.stack(actions, dim=1), cost

    def _optimize(self, state: Tensor, init: Tensor) -> Tensor:
        us = self.clamp(init)
        xs, cost = self._trajectory(state, us)
        if not bool(torch.isfinite(cost)):  # where it went non-finite, and why, named by the error
            raise non_finite_rollout_error(self.dynamics, state[None], us[:, None, None], 0, "ILQR")
        mu, delta = self.mu_init, 1.0  # reset each call: the warm start already carries the progress
        k_prev = np.zeros(tuple(us.shape))
        derivatives = None
        iterations, accepted = 0, 0
        for _ in range(self.iterations):
            iterations += 1
            if derivatives is None:
                derivatives = self._derivatives(xs[:-1], us)
            result = self._backward(us.cpu().double().numpy(), *derivatives, mu, k_prev)
            if result is None:
                mu, delta = self._increase(mu, delta)
                if mu > self.mu_max:
                    break
                continue
            k_prev, K_np, dv1, dv2 = result
            k, K = (torch.as_tensor(v, dtype=self.dtype, device=self.device) for v in (k_prev, K_np))
            states, actions, costs = self._line_search(state, xs, us, k, K)
            costs = torch.where(torch.isfinite(costs), costs, torch.full_like(costs, math.inf))
            best = int(torch.argmin(costs))
            new_cost = costs[best]
            if bool(new_cost < cost):
                # Accept an actual cost decrease (Tassa 2012's ratio test of actual to expected
                # reduction with threshold 0); every step size is already evaluated, so take
                # the best one rather than the largest acceptable.
                change = float(cost - new_cost)
                xs, us, cost = states[best], actions[best], new_cost
                derivatives = None
                accepted += 1
                mu, delta = self._decrease(mu, delta)
                if change <= self.tol * max(abs(float(cost)), 1e-12):
                    break
            else:
                expected = -(dv1 + dv2)
                if expected <= self.tol * max(abs(float(cost)), 1e-12):
                    break  # at a (local) optimum: no step is predicted to help
                mu, delta = self._increase(mu, delta)
                if mu > self.mu_max:
                    break
        self.last_info = {"cost": float(cost), "iterations": iterations, "accepted": accepted, "mu": mu}
        return us

    def _increase(self, mu: float, delta: float) -> tuple[float, float]:
        """Tassa 2012, Sec. II-F: Delta <- max(Delta0, Delta Delta0), mu <- max(mu_min, mu Delta)."""
        delta = max(self.mu_factor, delta * self.mu_factor)
        return max(self.mu_min, mu * delta), delta

    def _decrease(self, mu: float, delta: float) -> tuple[float, float]:
        """Tassa 2012, Sec. II-F: Delta <- min(1/Delta0, Delta/Delta0), mu <- mu Delta or 0 below mu_min."""
        delta = min(1.0 / self.mu_factor, delta / self.mu_factor)
        mu = mu * delta
        return (mu if mu > self.mu_min else 0.0), delta
