r"""Fused Sinkhorn: the whole iteration loop of one problem in one Triton program.

The batched torch solver (`optical.ot.sinkhorn`) launches a handful of kernels per half-step
and synchronises with the host at every convergence check; at the batch sizes of token-level
OT (64 problems of 32 × 32 tokens) the GPU spends its time launching, not computing. Here
each problem is one program: its cost tile is loaded once, the log-domain updates

    f = λ (log a − LSE_j(log K_ij + g_j)),   g = λ (log b − LSE_i(log K_ij + f_i)),
    log K_ij = log a_i + log b_j − C_ij / ε   (or log R_ij with a prior)

run in registers until ε · max |Δf| < tol at a check (every `check_every` iterations, as in
the torch solver) or `max_iter`, and the plan exp(log K + f ⊕ g) is written once. Each
problem stops at its own convergence (the torch solver stops the batch together), so the
plans agree with it and with POT to the tolerance, not bit for bit.

For plans without autograd (the envelope gradient) on CUDA tensors, and tiles up to
`MAX_TOKENS` per side; `optical.ot.sinkhorn(..., solver="triton")` falls back to the torch
solver elsewhere. Needs the `triton` package (shipped with CUDA builds of torch on Linux).
On a CPU the kernel runs in Triton's interpreter (`TRITON_INTERPRET=1`, set before triton
is imported): slow, used by the tests to check the numbers.

Example (under TRITON_INTERPRET=1 on a CPU, or on CUDA tensors):

    >>> plan = fused_sinkhorn(cost, a, b, epsilon=0.05).plan      # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math

import torch

#: the largest side (tokens) the fused kernel takes; one tile of MAX_TOKENS² lives in registers
MAX_TOKENS = 128


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # not installed, or a build that does not import on this machine
        return False
    return True


def interpreting() -> bool:
    """Triton's CPU interpreter is on (kernels run on CPU tensors, for tests)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def applies(cost: torch.Tensor, needs_grad: bool) -> bool:
    """Whether the fused kernel can solve this batch (else use the torch solver)."""
    if needs_grad or cost.dim() != 3 or not triton_available():
        return False
    if max(cost.shape[1], cost.shape[2]) > MAX_TOKENS or cost.shape[0] == 0:
        return False
    return cost.is_cuda or (interpreting() and cost.device.type == "cpu")


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def sinkhorn_kernel(cost_ptr, a_ptr, b_ptr, prior_ptr, plan_ptr, iters_ptr, error_ptr,
                        n, m, inv_eps, eps, lam, max_iter, tol, check_every,
                        HAS_PRIOR: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
        pid = tl.program_id(0)
        rows = tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_M)
        in_rows = rows < n
        in_cols = cols < m
        a = tl.load(a_ptr + pid * n + rows, mask=in_rows, other=0.0)
        b = tl.load(b_ptr + pid * m + cols, mask=in_cols, other=0.0)
        row_real = a > 0
        col_real = b > 0
        log_a = tl.where(row_real, tl.log(tl.where(row_real, a, 1.0)), 0.0)
        log_b = tl.where(col_real, tl.log(tl.where(col_real, b, 1.0)), 0.0)
        offsets = pid * n * m + rows[:, None] * m + cols[None, :]
        inside = in_rows[:, None] & in_cols[None, :]
        cost = tl.load(cost_ptr + offsets, mask=inside, other=0.0)
        if HAS_PRIOR:
            reference = tl.load(prior_ptr + offsets, mask=inside, other=0.0)
        else:
            reference = log_a[:, None] + log_b[None, :]
        real = row_real[:, None] & col_real[None, :]
        # -1e30, a finite stand-in for log 0 (a compiled kernel reads no module globals):
        # padded rows/columns stay out of every log-sum-exp without NaNs
        log_kernel = tl.where(real, reference - cost * inv_eps, -1.0e30)
        f = tl.sum(log_kernel * 0.0, axis=1)  # zeros of the tile's dtype
        g = tl.sum(log_kernel * 0.0, axis=0)
        error = tl.max(f) + 1.0e30
        iterations = 0
        running = max_iter > 0
        while running:
            scores = log_kernel + g[None, :]
            top = tl.max(scores, axis=1)
            lse = top + tl.log(tl.sum(tl.exp(scores - top[:, None]), axis=1))
            f_new = tl.where(row_real, lam * (log_a - lse), 0.0)
            scores = log_kernel + f_new[:, None]
            top = tl.max(scores, axis=0)
            lse = top + tl.log(tl.sum(tl.exp(scores - top[None, :]), axis=0))
            g = tl.where(col_real, lam * (log_b - lse), 0.0)
            error = tl.max(tl.abs(f_new - f)) * eps
            f = f_new
            iterations += 1
            check = (iterations % check_every == 0) | (iterations == max_iter)
            running = (iterations < max_iter) & ~(check & (error < tol))
        plan = tl.where(real, tl.exp(log_kernel + f[:, None] + g[None, :]), 0.0)
        tl.store(plan_ptr + offsets, plan, mask=inside)
        tl.store(iters_ptr + pid, iterations)
        tl.store(error_ptr + pid, error)

    return sinkhorn_kernel


def fused_sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, epsilon: float = 0.05,
                   rho: float | None = None, max_iter: int = 100, tol: float = 1e-6, check_every: int = 10,
                   log_prior: torch.Tensor | None = None):
    """The same problem and result as `optical.ot.sinkhorn` (see there), one program per batch
    item. cost [batch, n, m] (float32 or float64; half precision is solved in float32),
    a [batch, n], b [batch, m], log_prior [batch, n, m] or [n, m]. Returns a SinkhornResult
    whose `iterations` / `error` are the largest over the batch."""
    from optical.ot.sinkhorn import SinkhornResult

    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()
    batch, n, m = cost.shape
    cost = cost.contiguous()
    a = a.to(cost).contiguous()
    b = b.to(cost).contiguous()
    prior = log_prior.to(cost).expand(batch, n, m).contiguous() if log_prior is not None else cost
    plan = torch.empty_like(cost)
    iterations = torch.zeros(batch, dtype=torch.int32, device=cost.device)
    error = torch.zeros(batch, dtype=cost.dtype, device=cost.device)
    lam = 1.0 if rho is None else rho / (rho + epsilon)
    block_n = max(16, 1 << math.ceil(math.log2(max(n, 1))))
    block_m = max(16, 1 << math.ceil(math.log2(max(m, 1))))
    warps = 1 if block_n * block_m <= 1024 else 4 if block_n * block_m <= 4096 else 8
    _kernel()[(batch,)](cost, a, b, prior, plan, iterations, error, n, m, 1.0 / epsilon, epsilon, lam,
                        max_iter, tol, max(1, check_every), HAS_PRIOR=log_prior is not None,
                        BLOCK_N=block_n, BLOCK_M=block_m, num_warps=warps)
    stats = torch.stack([iterations.max().to(cost.dtype), error.max()]).tolist()  # one host sync
    return SinkhornResult(plan=plan, iterations=int(stats[0]), error=float(stats[1]))
