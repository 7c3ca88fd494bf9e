r"""Batched log-domain Sinkhorn for entropic (balanced or unbalanced) optimal transport.

For each batch item solve

    min_T  <T, C> + ε KL(T | a ⊗ b) + ρ KL(T 1 | a) + ρ KL(Tᵀ 1 | b)

(optionally with another reference measure R in place of a ⊗ b, see `log_prior`)

with ρ = ∞ (hard marginals, the balanced problem) or ρ < ∞ (KL-relaxed marginals,
Chizat et al. 2016). The plan is T_ij = exp(f_i + log a_i + log b_j - C_ij / ε + g_j)
where the scaled potentials f, g follow the fixed point

    f = λ (log a - LSE_j(log a_i + log b_j - C_ij/ε + g_j) + ... )   λ = ρ / (ρ + ε)

This is the formulation of POT's `ot.sinkhorn` (balanced; there KL and entropy give the
same plan) and `ot.sinkhorn_unbalanced(..., reg_type="kl")`, so plans match POT's. Working
on log-potentials keeps small ε (1e-3 with costs in [0, 2]) free of under/overflow.

Padding: a zero mass means log a = -inf; those rows/columns are masked out of every
log-sum-exp, so padded tokens carry no mass and leave the real tokens' plan unchanged.

References: Cuturi 2013 (Sinkhorn distances); Peyré & Cuturi 2019, §4.4 (log domain);
Chizat, Peyré, Schmitzer & Vialard 2018 (unbalanced scaling algorithms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SinkhornResult:
    """plan: [batch, n, m]; iterations run; final potential change (the stopping error)."""

    plan: torch.Tensor
    iterations: int
    error: float


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    epsilon: float = 0.05,
    rho: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    check_every: int = 10,
    log_prior: torch.Tensor | None = None,
    solver: str = "torch",
) -> SinkhornResult:
    """Entropic OT plans for a batch of problems, on the device of `cost`.

    | arg | shape | meaning |
    |---|---|---|
    | cost | [batch, n, m] | cost matrices |
    | a | [batch, n] | source masses, ≥ 0 (0 = padding) |
    | b | [batch, m] | target masses, ≥ 0 (0 = padding) |
    | log_prior | [batch, n, m] or [n, m], optional | log reference measure R (default log a ⊗ b) |
    | returns.plan | [batch, n, m] | transport plans, zero on padded rows/columns |

    `epsilon` is the entropic regularisation (POT's `reg`), `rho` the marginal relaxation
    (POT's `reg_m`; None = balanced). Iterations stop at `max_iter` or once the largest
    change of the potentials (in cost units, ε·Δf) falls below `tol`; checked every
    `check_every` iterations because each check synchronises a GPU with the host.
    Autograd flows through the iterations when the inputs require grad (unrolled
    gradient); for the envelope gradient call this under `torch.no_grad()`.

    `log_prior` replaces the reference measure of the entropic term, KL(T | R) instead of
    KL(T | a ⊗ b) (POT's `c` argument of `sinkhorn_unbalanced`); the marginal terms still
    use a and b. Used by SIGROT to pull plans towards the teacher's similarity graph.

    `solver="triton"` solves each problem in one fused Triton program
    (`optical.ot.sinkhorn_triton`) where that applies: CUDA tensors, no autograd, at most
    128 tokens a side, triton installed; anywhere else it falls back to this solver.

    Example: the plan's marginals are the masses, and it equals POT's (float64):

    >>> import ot, torch
    >>> cost = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    >>> a = b = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    >>> result = sinkhorn(cost, a, b, epsilon=0.1, max_iter=1000, tol=1e-12)
    >>> result.plan[0].sum(1).tolist(), result.plan[0].sum(0).tolist()
    ([0.5, 0.5], [0.5, 0.5])
    >>> pot = ot.sinkhorn(a[0].numpy(), b[0].numpy(), cost[0].numpy(), reg=0.1, stopThr=1e-12)
    >>> bool(abs(result.plan[0].numpy() - pot).max() < 1e-9)
    True
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be [batch, n, m], got shape {tuple(cost.shape)}")
    if solver not in ("torch", "triton"):
        raise ValueError(f"solver must be 'torch' or 'triton', got {solver!r}")
    if solver == "triton":
        from optical.ot import sinkhorn_triton

        inputs = (cost, a, b) if log_prior is None else (cost, a, b, log_prior)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        if sinkhorn_triton.applies(cost, needs_grad):
            return sinkhorn_triton.fused_sinkhorn(cost, a, b, epsilon, rho, max_iter, tol, check_every, log_prior)
    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()  # log-sum-exp in half precision loses the plan
    a, b = a.to(cost), b.to(cost)
    row_real, col_real = a > 0, b > 0
    log_a = torch.log(a.clamp_min(1e-38)).masked_fill(~row_real, 0.0)
    log_b = torch.log(b.clamp_min(1e-38)).masked_fill(~col_real, 0.0)
    real = row_real[:, :, None] & col_real[:, None, :]
    # log of the Gibbs kernel w.r.t. the reference measure a ⊗ b; -inf off the real block
    if log_prior is None:
        log_reference = log_a[:, :, None] + log_b[:, None, :]
    else:
        log_reference = log_prior.to(cost).expand_as(cost)
    log_kernel = (log_reference - cost / epsilon).masked_fill(~real, float("-inf"))
    # Fully padded rows/columns get a finite (ignored) kernel in their own log-sum-exp, so
    # the unrolled backward never computes exp(-inf - -inf) = NaN there.
    row_kernel = log_kernel.masked_fill(~row_real[:, :, None], 0.0)
    col_kernel = log_kernel.masked_fill(~col_real[:, None, :], 0.0)
    lam = 1.0 if rho is None else rho / (rho + epsilon)

    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    error = float("inf")
    iterations = 0
    # Without autograd, iterate in the scaling domain on a kernel with the potentials
    # absorbed (same fixed point; a batched vector-matrix product instead of a log-sum-exp
    # per half-step, several times faster). A block of `check_every` scaling steps that
    # under/overflows (small ε, far from the solution) is redone in the log domain.
    fast = not (torch.is_grad_enabled() and log_kernel.requires_grad)
    check_every = max(1, check_every)
    while iterations < max_iter:
        if fast:
            f, g, iterations, error, finished = _scaling_iterations(
                log_kernel, f, g, a, b, row_real, col_real, lam, epsilon, iterations, max_iter, tol, check_every)
            if finished:
                # g given f once more in the log domain: the same half-step, with the
                # rounding of the final potentials, so the columns fit b to float precision.
                g = lam * (log_b - torch.logsumexp(col_kernel + f[:, :, None], dim=1))
                g = g.masked_fill(~col_real, 0.0)
                break
        block = min(check_every - iterations % check_every, max_iter - iterations)
        for _ in range(block):
            f_prev = f
            f = lam * (log_a - torch.logsumexp(row_kernel + g[:, None, :], dim=2))
            f = f.masked_fill(~row_real, 0.0)
            g = lam * (log_b - torch.logsumexp(col_kernel + f[:, :, None], dim=1))
            g = g.masked_fill(~col_real, 0.0)
        iterations += block
        if iterations % check_every == 0 or iterations == max_iter:
            error = float((f - f_prev).detach().abs().max()) * epsilon
            if error < tol:
                break
    plan = torch.exp(log_kernel + f[:, :, None] + g[:, None, :])
    return SinkhornResult(plan=plan, iterations=iterations, error=error)



# Scalings are re-absorbed into the potentials once one leaves [e^-10, e^10]. A block
# whose scalings end outside [e^-30, e^30] is rejected and redone in the log domain: it
# started from a badly scaled kernel (entries in or near the subnormal range, e.g. small ε
# far from the solution) and the products may have lost precision without overflowing.
_ABSORB_AT = 10.0
_REJECT_AT = 30.0


def _scaling_iterations(log_kernel, f, g, a, b, row_real, col_real, lam: float, epsilon: float,
                        start: int, max_iter: int, tol: float, check_every: int):
    r"""Sinkhorn iterations `start+1 …` in the scaling domain around the potentials (f, g).

    With K̃ = exp(log_kernel + f ⊕ g), f' = f + log u, g' = g + log v, the log-domain
    update f' = λ(log a - LSE_j(log_kernel + g')) reads u = (a / K̃v)^λ · exp((λ-1) f), and
    the same for v (stabilised scaling with absorption, Schmitzer 2019, "Stabilized sparse
    scaling algorithms for entropy regularized transport problems"). Convergence is checked
    every `check_every` iterations exactly as in the log domain (ε · max |Δf| of the last
    iteration). Returns (f, g, iterations, error, finished); finished=False means the
    next block under/overflowed or left the safe range and (f, g, iterations) is the last
    good check, from which the caller continues in the log domain.
    """
    iterations, error = start, float("inf")
    row_pad = (~row_real).to(log_kernel.dtype)[:, None, :]  # +1 in padded denominators: 0 mass stays 0
    col_pad = (~col_real).to(log_kernel.dtype)[:, None, :]
    a3, b3 = a.unsqueeze(1), b.unsqueeze(1)
    kernel = None
    while iterations < max_iter:
        if kernel is None:  # (re)absorb: u = v = 1 around the current potentials
            kernel = torch.exp(log_kernel + f[:, :, None] + g[:, None, :])  # [B, n, m]
            # Scalings are row vectors ([B, 1, n] @ [B, n, m]): on CPU a batched
            # vector-matrix product is several times faster than matrix-vector.
            kernel_t = kernel.transpose(1, 2).contiguous()
            f0, g0 = f, g
            u, v = torch.ones_like(a3), torch.ones_like(b3)
            if lam != 1.0:
                row_factor = torch.exp((lam - 1.0) * f0)[:, None, :]
                col_factor = torch.exp((lam - 1.0) * g0)[:, None, :]
        block = min(check_every - iterations % check_every, max_iter - iterations)
        u_block, v_block = u, v
        for _ in range(block):
            u_prev = u
            if lam == 1.0:
                u = a3 / torch.baddbmm(row_pad, v, kernel_t)
                v = b3 / torch.baddbmm(col_pad, u, kernel)
            else:
                u = (a3 / torch.baddbmm(row_pad, v, kernel_t)).pow(lam) * row_factor
                v = (b3 / torch.baddbmm(col_pad, u, kernel)).pow(lam) * col_factor
        log_u, log_v, log_u_prev = torch.log(u[:, 0]), torch.log(v[:, 0]), torch.log(u_prev[:, 0])
        log_u = log_u.masked_fill(~row_real, 0.0)
        log_v = log_v.masked_fill(~col_real, 0.0)
        log_u_prev = log_u_prev.masked_fill(~row_real, 0.0)
        stats = torch.stack([(log_u - log_u_prev).abs().max(), torch.maximum(log_u.abs().max(), log_v.abs().max())])
        change, spread = stats.tolist()  # one host sync per check, like the log domain
        if not (math.isfinite(change) and math.isfinite(spread)) or spread > _REJECT_AT:
            # Redo this block from the last good state in the log domain.
            f = (f0 + torch.log(u_block[:, 0]).masked_fill(~row_real, 0.0))
            g = (g0 + torch.log(v_block[:, 0]).masked_fill(~col_real, 0.0))
            return f, g, iterations, error, False
        iterations += block
        f, g = f0 + log_u, g0 + log_v
        error = change * epsilon
        if (iterations % check_every == 0 or iterations == max_iter) and error < tol:
            return f, g, iterations, error, True
        if spread > _ABSORB_AT:
            kernel = None
    return f, g, iterations, error, True
