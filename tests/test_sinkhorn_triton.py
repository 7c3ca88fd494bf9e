"""The fused Triton Sinkhorn (`optical.ot.sinkhorn_triton`) against POT and the torch solver.

There is no GPU here: the kernel runs in Triton's CPU interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is imported, so the numerical checks run in a fresh
process. The dispatch of `sinkhorn(..., solver="triton")` (where it falls back to the torch
solver) is checked in this process, where the interpreter is off."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from optical.ot import sinkhorn_triton
from optical.ot.sinkhorn import sinkhorn

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install triton; Linux x86_64)")

CHECKS = textwrap.dedent('''
    import json, sys
    import numpy as np, ot, torch
    from optical.ot.sinkhorn import sinkhorn
    from optical.losses.token_ot import TokenOTLoss
    from optical.losses.base import DistillBatch

    torch.manual_seed(0)
    out = {}
    batch, n, m = 5, 9, 6
    cost = torch.rand(batch, n, m, dtype=torch.float64)
    a = torch.rand(batch, n, dtype=torch.float64)
    b = torch.rand(batch, m, dtype=torch.float64)
    a[1, 6:] = 0  # padded tokens
    b[2, 2:] = 0
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)

    fused = sinkhorn(cost, a, b, 0.05, None, 2000, 1e-10, solver="triton")
    worst = 0.0
    for i in range(batch):
        rows, cols = a[i] > 0, b[i] > 0
        pot = ot.sinkhorn(a[i][rows].numpy(), b[i][cols].numpy(), cost[i][rows][:, cols].numpy(), reg=0.05,
                          stopThr=1e-13, numItermax=100000, method="sinkhorn_log")
        worst = max(worst, float(np.abs(fused.plan[i][rows][:, cols].numpy() - pot).max()))
    out["balanced_vs_pot"] = worst
    out["padding_zero"] = float(fused.plan[1, 6:].abs().max() + fused.plan[2, :, 2:].abs().max())
    out["iterations"] = fused.iterations

    i = 0
    pot = ot.sinkhorn_unbalanced(a[i].numpy(), b[i].numpy(), cost[i].numpy(), reg=0.05, reg_m=0.5,
                                 reg_type="kl", stopThr=1e-13, numItermax=100000, method="sinkhorn_stabilized")
    unbalanced = sinkhorn(cost[:1], a[:1], b[:1], 0.05, 0.5, 5000, 1e-12, solver="triton")
    out["unbalanced_vs_pot"] = float(np.abs(unbalanced.plan[0].numpy() - pot).max())

    prior = torch.randn(batch, n, m, dtype=torch.float64)
    with_prior = [sinkhorn(cost, a, b, 0.05, 1.0, 3000, 1e-11, log_prior=prior, solver=s).plan for s in ("triton", "torch")]
    out["prior_vs_torch"] = float((with_prior[0] - with_prior[1]).abs().max())

    # float32, as in training, run to convergence: the fused and the batched solver agree to
    # float precision (at a loose tol they stop at different iterations: per problem vs batch)
    c32, a32, b32 = cost.float(), a.float(), b.float()
    plans = [sinkhorn(c32, a32, b32, 0.02, None, 3000, 1e-6, solver=s).plan for s in ("triton", "torch")]
    out["float32_vs_torch"] = float((plans[0] - plans[1]).abs().max())

    # the token_ot loss with solver triton: the same value and gradient as with the torch solver
    student = torch.randn(3, 7, 16, requires_grad=True)
    teacher = torch.randn(3, 5, 16)
    masks = (torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 7, dtype=torch.bool))
    values, grads = [], []
    for solver in ("triton", "torch"):
        batch_ = DistillBatch(teacher_tokens=teacher, teacher_mask=masks[0], student_tokens=student,
                              student_mask=masks[1], teacher_sentence=teacher.mean(1), student_sentence=student.mean(1))
        loss = TokenOTLoss(epsilon=0.05, solver=solver)(batch_)
        (grad,) = torch.autograd.grad(loss, student)
        values.append(float(loss))
        grads.append(grad)
    out["loss_diff"] = abs(values[0] - values[1])
    out["grad_diff"] = float((grads[0] - grads[1]).abs().max())
    json.dump(out, sys.stdout)
''')


@pytest.fixture(scope="module")
def interpreted():
    """The checks above, run with the kernel in Triton's CPU interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", CHECKS], capture_output=True, text=True, env=env, cwd=root,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_triton
def test_fused_plans_equal_pot_in_float64(interpreted):
    assert interpreted["balanced_vs_pot"] < 1e-8
    assert interpreted["unbalanced_vs_pot"] < 1e-7
    assert interpreted["padding_zero"] == 0.0
    assert 10 <= interpreted["iterations"] <= 2000


@needs_triton
def test_fused_solver_agrees_with_the_torch_solver(interpreted):
    assert interpreted["prior_vs_torch"] < 1e-8  # SIGROT's reference measure
    assert interpreted["float32_vs_torch"] < 1e-5


@needs_triton
def test_token_ot_with_the_fused_solver_gives_the_same_loss_and_gradient(interpreted):
    assert interpreted["loss_diff"] < 1e-4
    assert interpreted["grad_diff"] < 1e-4


def test_triton_solver_falls_back_where_it_does_not_apply(monkeypatch):
    """CPU tensors without the interpreter, autograd, or more than MAX_TOKENS tokens: the torch
    solver's exact result."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    torch.manual_seed(1)
    cost = torch.rand(2, 4, 3)
    a, b = torch.full((2, 4), 0.25), torch.full((2, 3), 1 / 3)
    assert not sinkhorn_triton.applies(cost, needs_grad=False)  # CPU tensor, interpreter off
    assert torch.equal(sinkhorn(cost, a, b, solver="triton").plan, sinkhorn(cost, a, b).plan)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(sinkhorn_triton, "triton_available", lambda: True)
    assert sinkhorn_triton.applies(cost, needs_grad=False)
    assert not sinkhorn_triton.applies(cost, needs_grad=True)
    big = torch.rand(1, sinkhorn_triton.MAX_TOKENS + 1, 3)
    assert not sinkhorn_triton.applies(big, needs_grad=False)
    leaf = cost.clone().requires_grad_()
    result = sinkhorn(leaf, a, b, solver="triton")  # needs autograd: the torch solver
    assert result.plan.requires_grad


def test_unknown_solver_is_a_clear_error():
    with pytest.raises(ValueError, match="solver must be 'torch' or 'triton', got 'cuda'"):
        sinkhorn(torch.rand(1, 2, 2), torch.full((1, 2), 0.5), torch.full((1, 2), 0.5), solver="cuda")


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the interpreter checks run instead)")
def test_fused_solver_on_cuda_matches_the_torch_solver_and_pot():
    import numpy as np
    import ot

    torch.manual_seed(0)
    cost = torch.rand(64, 32, 32, dtype=torch.float64, device="cuda")
    a = torch.rand(64, 32, dtype=torch.float64, device="cuda")
    b = torch.rand(64, 32, dtype=torch.float64, device="cuda")
    a[::3, 25:] = 0
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    fused = sinkhorn(cost, a, b, 0.05, None, 5000, 1e-10, solver="triton")
    batched = sinkhorn(cost, a, b, 0.05, None, 5000, 1e-10)
    assert (fused.plan - batched.plan).abs().max() < 1e-8
    i = 3
    rows = a[i] > 0
    pot = ot.sinkhorn(a[i][rows].cpu().numpy(), b[i].cpu().numpy(), cost[i][rows].cpu().numpy(), reg=0.05,
                      stopThr=1e-13, numItermax=100000, method="sinkhorn_log")
    assert np.abs(fused.plan[i][rows].cpu().numpy() - pot).max() < 1e-5
    c32 = cost.float()
    plans = [sinkhorn(c32, a.float(), b.float(), 0.05, None, 3000, 1e-6, solver=s).plan for s in ("triton", "torch")]
    assert (plans[0] - plans[1]).abs().max() < 1e-5


@needs_triton
@pytest.mark.parametrize("arch, prior, block, dtype", [(90, False, 32, "fp32"), (90, True, 128, "fp32"),
                                                       (80, False, 16, "fp64")])  # H100/H200, A100
def test_fused_kernel_compiles_for_the_gpus_it_is_meant_for(arch, prior, block, dtype):
    """Ahead-of-time compilation to a CUDA binary (no GPU needed): catches what the
    interpreter lets through, e.g. a module global read inside the kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointers = {name: f"*{dtype}" for name in ("cost_ptr", "a_ptr", "b_ptr", "prior_ptr", "plan_ptr", "error_ptr")}
    signature = {**pointers, "iters_ptr": "*i32", "n": "i32", "m": "i32", "inv_eps": "fp32", "eps": "fp32",
                 "lam": "fp32", "max_iter": "i32", "tol": "fp32", "check_every": "i32",
                 "HAS_PRIOR": "constexpr", "BLOCK_N": "constexpr", "BLOCK_M": "constexpr"}
    source = ASTSource(fn=sinkhorn_triton._kernel(), signature=signature,
                       constexprs={"HAS_PRIOR": prior, "BLOCK_N": block, "BLOCK_M": block})
    binary = triton.compile(source, target=GPUTarget("cuda", arch, 32))
    assert "cubin" in binary.asm
