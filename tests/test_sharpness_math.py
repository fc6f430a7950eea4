"""The sharpness metrics on losses whose Hessian is known: quadratics and linear least squares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgefault.analysis import (
    filter_normalized_direction, gradient, hessian_trace, hessian_vector_product, landscape_1d, landscape_2d,
    sam_sharpness, top_eigenvalue,
)
from edgefault.analysis.landscape import grid


def known_spectrum_matrix(size: int, eigenvalues: np.ndarray, seed: int = 0) -> torch.Tensor:
    """A dense symmetric matrix Q diag(eigenvalues) Q^T with a random rotation Q."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((size, size)))
    return torch.tensor(q @ np.diag(eigenvalues) @ q.T, dtype=torch.float64)


@pytest.fixture
def quadratic():
    """0.5 x^T A x over x split into two parameter tensors (shapes 6x5 and 20), at a random point."""
    eigenvalues = np.concatenate([[10.0, 6.0], np.linspace(-1.0, 4.0, 48)])
    a = known_spectrum_matrix(50, eigenvalues)
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(6, 5, generator=generator, dtype=torch.float64).requires_grad_(True)
    second = torch.randn(20, generator=generator, dtype=torch.float64).requires_grad_(True)

    def closure():
        x = torch.cat([first.flatten(), second])
        return 0.5 * x @ a @ x

    return closure, [first, second], a, eigenvalues


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic(quadratic):
    closure, params, _, eigenvalues = quadratic
    result = top_eigenvalue(closure, params, torch.Generator().manual_seed(0), max_iterations=100, tolerance=1e-6)
    assert result.converged and result.iterations == len(result.history) == len(result.relative_changes) + 1
    assert result.eigenvalue == pytest.approx(eigenvalues.max(), rel=0.02)
    assert result.relative_changes[-1] < 1e-6


def test_power_iteration_reports_when_it_has_not_converged(quadratic):
    closure, params, _, _ = quadratic
    result = top_eigenvalue(closure, params, torch.Generator().manual_seed(0), max_iterations=2, tolerance=1e-9)
    assert not result.converged and result.iterations == 2


def test_hutchinson_estimates_the_trace_of_a_quadratic(quadratic):
    closure, params, _, eigenvalues = quadratic
    estimate = hessian_trace(closure, params, torch.Generator().manual_seed(0), probes=200)
    true_trace = eigenvalues.sum()
    assert estimate.probes == 200
    assert estimate.trace == pytest.approx(true_trace, rel=0.10)
    assert abs(estimate.trace - true_trace) < 4 * estimate.standard_error


def test_sam_sharpness_of_a_quadratic_matches_the_closed_form(quadratic):
    closure, params, a, _ = quadratic
    rho = 0.05
    x = torch.cat([params[0].detach().flatten(), params[1].detach()])
    g = a @ x
    expected = rho * g.norm() + 0.5 * rho**2 * (g @ a @ g) / (g @ g)
    result = sam_sharpness(closure, params, rho)
    assert result.sharpness == pytest.approx(float(expected), rel=1e-9)
    assert result.gradient_norm == pytest.approx(float(g.norm()), rel=1e-12)
    assert result.perturbed_loss - result.loss == result.sharpness


def test_sam_sharpness_at_a_stationary_point_is_zero():
    x = torch.zeros(3, requires_grad=True)
    assert sam_sharpness(lambda: (x**2).sum(), [x], rho=0.1).sharpness == 0.0


def test_least_squares_curvature_is_x_transpose_x_over_n():
    """A linear model y = X w + b with loss 1/(2n) |y - t|^2 has the Hessian [X 1]^T [X 1] / n."""
    rng = np.random.default_rng(3)
    n, features = 300, 8
    inputs = rng.standard_normal((n, features)) * np.linspace(0.5, 3.0, features)
    targets = rng.standard_normal(n)
    x, t = torch.tensor(inputs), torch.tensor(targets)
    weight = torch.zeros(features, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def closure():  # three mini-batch terms whose sum is the full loss
        for start in range(0, n, 100):
            residual = x[start : start + 100] @ weight + bias - t[start : start + 100]
            yield 0.5 * (residual**2).sum() / n

    design = np.hstack([inputs, np.ones((n, 1))])
    hessian = design.T @ design / n
    eigen = top_eigenvalue(closure, [weight, bias], torch.Generator().manual_seed(0), 200, 1e-8)
    assert eigen.eigenvalue == pytest.approx(np.linalg.eigvalsh(hessian).max(), rel=0.02)
    trace = hessian_trace(closure, [weight, bias], torch.Generator().manual_seed(0), probes=100)
    assert trace.trace == pytest.approx(np.trace(hessian), rel=0.10)
    probe = [torch.ones(features, dtype=torch.float64), torch.ones(1, dtype=torch.float64)]
    hv = torch.cat(hessian_vector_product(closure, [weight, bias], probe))
    np.testing.assert_allclose(hv.numpy(), hessian @ np.ones(features + 1), rtol=1e-10)


def test_gradient_sums_the_terms_of_a_closure():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    loss, (grad,) = gradient(lambda: [(x**2).sum(), 3 * x.sum()], [x])
    assert loss == 2.0 and grad.tolist() == [5.0, -1.0]


def test_every_perturbation_restores_the_parameters_bit_for_bit(quadratic):
    closure, params, _, _ = quadratic
    before = [p.detach().clone() for p in params]
    direction = [torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(5)) * 0.37
                 for p in params]
    sam_sharpness(closure, params, rho=0.0123)
    landscape_1d(closure, params, direction, grid(1.0, 7))
    landscape_2d(closure, params, (direction, [d.flip(0) for d in direction]), grid(0.7, 5), grid(0.3, 3))
    top_eigenvalue(closure, params, torch.Generator().manual_seed(0), max_iterations=3)
    hessian_trace(closure, params, torch.Generator().manual_seed(0), probes=2)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


def test_landscapes_sample_the_loss_on_the_line_and_the_plane(quadratic):
    closure, params, a, _ = quadratic
    x0 = torch.cat([params[0].detach().flatten(), params[1].detach()])
    d1 = [torch.ones_like(params[0]), torch.zeros_like(params[1])]
    d2 = [torch.zeros_like(params[0]), torch.ones_like(params[1])]
    alphas, betas = grid(1.0, 5), grid(0.5, 3)
    surface = landscape_2d(closure, params, (d1, d2), alphas, betas)
    line = landscape_1d(closure, params, d1, alphas)
    flat1, flat2 = torch.cat([d.flatten() for d in d1]), torch.cat([d.flatten() for d in d2])
    for row, beta in enumerate(betas):
        for column, alpha in enumerate(alphas):
            x = x0 + alpha * flat1 + beta * flat2
            assert surface[row, column] == pytest.approx(float(0.5 * x @ a @ x), rel=1e-12)
    np.testing.assert_array_equal(line, surface[1])  # b = 0 row of the plane is the line along d1


def test_grid_is_symmetric_and_has_the_origin_exactly():
    values = grid(0.3, 7)
    assert values[3] == 0.0 and values[0] == -0.3 and values[-1] == 0.3


def test_filter_normalization_gives_each_filter_the_weight_filter_norm():
    generator = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 3, 3, 3, generator=generator)
    conv[2] = 0.0  # a dead filter gets no direction
    linear = torch.randn(5, 7, generator=generator) * 3
    bias, bn_scale = torch.randn(4), torch.ones(4)
    directions = filter_normalized_direction([conv, bias, linear, bn_scale], torch.Generator().manual_seed(1))
    d_conv, d_bias, d_linear, d_bn = directions
    torch.testing.assert_close(d_conv.flatten(1).norm(dim=1), conv.flatten(1).norm(dim=1))
    torch.testing.assert_close(d_linear.norm(dim=1), linear.norm(dim=1))
    assert d_conv[2].abs().sum() == 0
    assert d_bias.abs().sum() == 0 and d_bn.abs().sum() == 0
    assert not torch.allclose(d_conv[0] / d_conv[0].norm(), conv[0] / conv[0].norm())  # random, not w itself
    # Biases draw no random numbers: leaving them out does not change the weight directions.
    again = filter_normalized_direction([conv, linear], torch.Generator().manual_seed(1))
    assert torch.equal(again[0], d_conv) and torch.equal(again[1], d_linear)


def test_the_metrics_are_deterministic_for_a_generator_seed(quadratic):
    closure, params, _, _ = quadratic
    runs = [hessian_trace(closure, params, torch.Generator().manual_seed(7), probes=5).samples for _ in range(2)]
    assert runs[0] == runs[1]
    other = hessian_trace(closure, params, torch.Generator().manual_seed(8), probes=5).samples
    assert other != runs[0]
    state = torch.random.get_rng_state()
    top_eigenvalue(closure, params, torch.Generator().manual_seed(7), max_iterations=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is never used


def test_argument_checks_of_the_estimators(quadratic):
    closure, params, _, _ = quadratic
    with pytest.raises(ValueError, match="at least 2 probes"):
        hessian_trace(closure, params, torch.Generator(), probes=1)
    with pytest.raises(ValueError, match="max_iterations"):
        top_eigenvalue(closure, params, torch.Generator(), max_iterations=0)
    assert math.isfinite(top_eigenvalue(closure, params, torch.Generator(), max_iterations=1).eigenvalue)
