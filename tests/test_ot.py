"""Batched log-domain Sinkhorn against POT, pair by pair; masks, marginals, gradients."""

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optical.ot import cost_matrix, idf_masses, sinkhorn, uniform_masses
from optical.ot.masses import document_frequencies, idf_table


def random_problem(batch=4, n=7, m=5, dim=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, dim, generator=g, dtype=dtype)
    y = torch.randn(batch, m, dim, generator=g, dtype=dtype)
    a = torch.rand(batch, n, generator=g, dtype=dtype) + 0.1
    b = torch.rand(batch, m, generator=g, dtype=dtype) + 0.1
    return x, y, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)


@pytest.mark.parametrize("kind", ["cosine", "sqeuclidean"])
def test_cost_matrix_matches_pot(kind):
    x, y, _, _ = random_problem()
    cost = cost_matrix(x, y, kind)
    for i in range(len(x)):
        metric = "cosine" if kind == "cosine" else "sqeuclidean"
        expected = ot.dist(x[i].numpy(), y[i].numpy(), metric=metric)
        np.testing.assert_allclose(cost[i].numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("epsilon", [0.05, 0.2])
def test_balanced_plans_match_pot_pair_by_pair(epsilon):
    x, y, a, b = random_problem()
    cost = cost_matrix(x, y)
    plan = sinkhorn(cost, a, b, epsilon=epsilon, max_iter=5000, tol=1e-12).plan
    for i in range(len(x)):
        expected = ot.sinkhorn(a[i].numpy(), b[i].numpy(), cost[i].numpy(), epsilon,
                               numItermax=100000, stopThr=1e-13)
        np.testing.assert_allclose(plan[i].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("rho", [0.1, 1.0, 10.0])
def test_unbalanced_plans_match_pot_pair_by_pair(rho):
    x, y, a, b = random_problem(seed=1)
    cost = cost_matrix(x, y)
    plan = sinkhorn(cost, a, b, epsilon=0.1, rho=rho, max_iter=5000, tol=1e-12).plan
    for i in range(len(x)):
        expected = ot.sinkhorn_unbalanced(a[i].numpy(), b[i].numpy(), cost[i].numpy(), 0.1, rho,
                                          reg_type="kl", numItermax=100000, stopThr=1e-13)
        np.testing.assert_allclose(plan[i].numpy(), expected, atol=1e-5)
        assert plan[i].sum() < 1.0  # relaxed marginals shed mass where transport is costly


def test_balanced_marginals_hold():
    x, y, a, b = random_problem(batch=3, n=9, m=6)
    plan = sinkhorn(cost_matrix(x, y), a, b, epsilon=0.05, max_iter=5000, tol=1e-12).plan
    torch.testing.assert_close(plan.sum(2), a, atol=1e-8, rtol=0)
    torch.testing.assert_close(plan.sum(1), b, atol=1e-8, rtol=0)


def test_padding_changes_nothing():
    """A padded problem gives the unpadded plan on the real block and zeros elsewhere."""
    x, y, _, _ = random_problem(batch=1, n=5, m=4)
    mask_x = torch.ones(1, 5, dtype=torch.bool)
    mask_y = torch.ones(1, 4, dtype=torch.bool)
    plain = sinkhorn(cost_matrix(x, y), uniform_masses(mask_x), uniform_masses(mask_y), max_iter=2000, tol=1e-12).plan
    junk = torch.randn(1, 3, 16, dtype=x.dtype) * 100  # padding states may hold anything
    xp, yp = torch.cat([x, junk], 1), torch.cat([y, junk[:, :2]], 1)
    mxp = torch.cat([mask_x, torch.zeros(1, 3, dtype=torch.bool)], 1)
    myp = torch.cat([mask_y, torch.zeros(1, 2, dtype=torch.bool)], 1)
    padded = sinkhorn(cost_matrix(xp, yp), uniform_masses(mxp), uniform_masses(myp), max_iter=2000, tol=1e-12).plan
    torch.testing.assert_close(padded[:, :5, :4], plain, atol=1e-10, rtol=0)
    assert padded[:, 5:].abs().max() == 0 and padded[:, :, 4:].abs().max() == 0


def test_batch_items_are_independent_with_different_lengths():
    x, y, _, _ = random_problem(batch=2, n=6, m=6)
    mx = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    my = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    batched = sinkhorn(cost_matrix(x, y), uniform_masses(mx), uniform_masses(my), max_iter=3000, tol=1e-12).plan
    for i in range(2):
        xi, yi = x[i:i + 1, mx[i]], y[i:i + 1, my[i]]
        alone = sinkhorn(cost_matrix(xi, yi), uniform_masses(mx[i:i + 1, mx[i]]), uniform_masses(my[i:i + 1, my[i]]),
                         max_iter=3000, tol=1e-12).plan
        torch.testing.assert_close(batched[i][mx[i]][:, my[i]], alone[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("epsilon", [1e-3, 5e-3])
def test_small_epsilon_stays_finite(epsilon):
    x, y, a, b = random_problem(dtype=torch.float32)
    result = sinkhorn(cost_matrix(x, y), a, b, epsilon=epsilon, max_iter=500)
    assert torch.isfinite(result.plan).all()
    # the last half-step fits the columns exactly, whatever the convergence of the rows
    torch.testing.assert_close(result.plan.sum(1), b, atol=1e-5, rtol=0)


def test_stops_on_tolerance_before_cap():
    x, y, a, b = random_problem()
    result = sinkhorn(cost_matrix(x, y), a, b, epsilon=0.5, max_iter=10000, tol=1e-6)
    assert result.iterations < 10000 and result.error < 1e-6
    capped = sinkhorn(cost_matrix(x, y), a, b, epsilon=0.01, max_iter=7, tol=0.0)
    assert capped.iterations == 7


def test_unrolled_gradient_matches_finite_differences():
    x, y, a, b = random_problem(batch=1, n=3, m=3, dim=4)
    x.requires_grad_(True)

    def value(inp):
        c = cost_matrix(inp, y)
        return (sinkhorn(c, a, b, epsilon=0.5, max_iter=300, tol=0.0).plan * c).sum()

    assert torch.autograd.gradcheck(value, (x,), eps=1e-6, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 8), m=st.integers(1, 8), eps=st.sampled_from([0.01, 0.1, 1.0]), seed=st.integers(0, 1000))
def test_plans_are_nonnegative_and_balanced_for_any_shape(n, m, eps, seed):
    x, y, a, b = random_problem(batch=2, n=n, m=m, dim=3, seed=seed)
    plan = sinkhorn(cost_matrix(x, y), a, b, epsilon=eps, max_iter=3000, tol=1e-10).plan
    assert (plan >= 0).all() and torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum((1, 2)), torch.ones(2, dtype=plan.dtype), atol=1e-6, rtol=0)


def test_idf_masses_weight_rare_tokens_more():
    df, n = document_frequencies([[1, 2], [1, 3], [1, 2]])
    table = idf_table(df, n, vocab_size=5)
    ids = torch.tensor([[1, 3, 0]])
    mask = torch.tensor([[True, True, False]])
    masses = idf_masses(ids, mask, table)
    assert masses[0, 2] == 0 and masses[0, 1] > masses[0, 0]
    torch.testing.assert_close(masses.sum(1), torch.ones(1))


@pytest.mark.parametrize("epsilon,rho", [(1e-3, None), (1e-3, 1.0), (0.05, None), (0.05, 0.1), (1.0, 10.0)])
def test_scaling_domain_fast_path_matches_the_log_domain_loop(epsilon, rho):
    """Without autograd the solver iterates in the scaling domain (with absorption); with
    autograd recording it runs the log-domain loop. Same iterations, same plans."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, 8, generator=g, dtype=torch.float64)
    y = torch.randn(4, 7, 8, generator=g, dtype=torch.float64)
    a = torch.rand(4, 9, generator=g, dtype=torch.float64)
    b = torch.rand(4, 7, generator=g, dtype=torch.float64)
    a[:, -2:] = 0
    b[1, -3:] = 0  # padding on both sides
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    cost = cost_matrix(x, y)
    with torch.no_grad():
        fast = sinkhorn(cost, a, b, epsilon, rho, max_iter=300, tol=0.0)
    log = sinkhorn(cost.clone().requires_grad_(True), a, b, epsilon, rho, max_iter=300, tol=0.0)
    assert fast.iterations == log.iterations
    torch.testing.assert_close(fast.plan, log.plan.detach(), atol=1e-10, rtol=0)
