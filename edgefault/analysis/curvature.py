"""Sharpness and curvature of a loss around its current parameters, for any differentiable loss.

Everything here works on a *loss closure* and a list of parameter tensors, so the same code
measures a quantized CNN and a quadratic whose Hessian is known. A closure returns either one
scalar tensor or an iterable of scalar tensors whose sum is the loss (a model's loss over many
images comes in mini-batch terms, so memory stays bounded; gradients are summed term by term).

- :func:`sam_sharpness`: L(w + rho g/||g||) - L(w), the loss increase at SAM's first-order
  worst-case perturbation of radius rho (Foret et al. 2021).
- :func:`top_eigenvalue`: the Hessian's eigenvalue of largest magnitude by power iteration on
  Hessian-vector products (Pearlmutter's double backpropagation), with its convergence.
- :func:`hessian_trace`: Hutchinson's estimator E[v^T H v] with Rademacher probes v.

Every function that moves the parameters puts back their exact saved bits afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Iterator, Sequence

import torch

from edgefault.models.perturb import restoring, set_offset

LossClosure = Callable[[], "torch.Tensor | Iterable[torch.Tensor]"]
StepCallback = Callable[[], None]


def loss_terms(closure: LossClosure) -> Iterator[torch.Tensor]:
    """The scalar terms of a closure's loss (one term when it returns a tensor).

    Example:
        >>> [float(t) for t in loss_terms(lambda: torch.tensor(2.0))]
        [2.0]
    """
    result = closure()
    if isinstance(result, torch.Tensor):
        yield result
    else:
        yield from result


def loss_value(closure: LossClosure) -> float:
    """The loss, without building a graph.

    Example:
        >>> loss_value(lambda: [torch.tensor(1.0), torch.tensor(0.5)])
        1.5
    """
    with torch.no_grad():
        return sum(float(term) for term in loss_terms(closure))


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Inner product of two parameter-shaped lists of tensors.

    Example:
        >>> float(dot([torch.ones(3)], [torch.full((3,), 2.0)]))
        6.0
    """
    return sum((x * y).sum() for x, y in zip(a, b))


def norm(a: Sequence[torch.Tensor]) -> float:
    """Euclidean norm of a parameter-shaped list of tensors.

    Example:
        >>> norm([torch.tensor([3.0]), torch.tensor([4.0])])
        5.0
    """
    return math.sqrt(sum(float((x.double() ** 2).sum()) for x in a))


def _accumulate(total: list[torch.Tensor], parts: Sequence[torch.Tensor | None]) -> None:
    for index, part in enumerate(parts):
        if part is not None:  # a parameter this term does not reach contributes zero
            total[index] += part.detach()


def gradient(closure: LossClosure, params: Sequence[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    """The loss and its gradient with respect to ``params`` (which must require grad).

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> loss, (g,) = gradient(lambda: (x**2).sum(), [x])
        >>> loss, g.tolist()
        (5.0, [2.0, 4.0])
    """
    total = [torch.zeros_like(p) for p in params]
    loss = 0.0
    for term in loss_terms(closure):
        loss += float(term.detach())
        _accumulate(total, torch.autograd.grad(term, params, allow_unused=True))
    return loss, total


def hessian_vector_product(closure: LossClosure, params: Sequence[torch.Tensor],
                           vector: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """H v by double backpropagation: the gradient of (grad L) . v, term by term.

    Through a straight-through quantizer (``x + (round(x) - x).detach()``) autograd sees the
    identity, so this is the Hessian of the loss with every quantizer replaced by its tangent
    (unit slope at the quantized value), just as a ReLU contributes slope and no curvature.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> (hv,) = hessian_vector_product(lambda: (x**2).sum(), [x], [torch.tensor([1.0, 0.0])])
        >>> hv.tolist()
        [2.0, 0.0]
    """
    total = [torch.zeros_like(p) for p in params]
    for term in loss_terms(closure):
        grads = torch.autograd.grad(term, params, create_graph=True, allow_unused=True)
        projection = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
        if isinstance(projection, torch.Tensor) and projection.requires_grad:  # else: linear term, no curvature
            _accumulate(total, torch.autograd.grad(projection, params, allow_unused=True))
    return total


@dataclasses.dataclass(frozen=True)
class SamSharpness:
    """SAM sharpness at radius ``rho``: ``perturbed_loss - loss``.

    Example:
        >>> SamSharpness(rho=0.05, loss=0.1, perturbed_loss=0.12, sharpness=0.02, gradient_norm=0.4).sharpness
        0.02
    """

    rho: float
    loss: float
    perturbed_loss: float
    sharpness: float
    gradient_norm: float


def sam_sharpness(closure: LossClosure, params: Sequence[torch.Tensor], rho: float) -> SamSharpness:
    """Loss at w + rho g/||g|| minus loss at w, with g the gradient at w (one global norm).

    For 0.5 x^T A x this is ``rho ||g|| + 0.5 rho^2 g^T A g / ||g||^2``. At a zero gradient
    there is no ascent direction and the sharpness is 0.

    Example:
        >>> x = torch.tensor([1.0, 0.0], requires_grad=True)
        >>> round(sam_sharpness(lambda: 0.5 * (x**2).sum(), [x], rho=0.1).sharpness, 6)
        0.105
    """
    loss, grads = gradient(closure, params)
    grad_norm = norm(grads)
    if grad_norm == 0.0:
        return SamSharpness(rho, loss, loss, 0.0, 0.0)
    with restoring(params) as origin:
        set_offset(params, origin, [rho * g / grad_norm for g in grads])
        perturbed_loss = loss_value(closure)
    return SamSharpness(rho, loss, perturbed_loss, perturbed_loss - loss, grad_norm)


@dataclasses.dataclass(frozen=True)
class PowerIteration:
    """Power iteration's result: the eigenvalue estimate and how it got there.

    ``history[k]`` is the Rayleigh quotient v_k^T H v_k after iteration k+1;
    ``relative_changes[k] = |history[k+1] - history[k]| / |history[k+1]|``; ``converged`` says
    whether the last change fell below ``tolerance`` within the allowed iterations.

    Example:
        >>> PowerIteration(2.0, (1.9, 2.0), (0.05,), False, 1e-3).iterations
        2
    """

    eigenvalue: float
    history: tuple[float, ...]
    relative_changes: tuple[float, ...]
    converged: bool
    tolerance: float

    @property
    def iterations(self) -> int:
        """How many Hessian-vector products were taken."""
        return len(self.history)


def random_normal_like(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Standard Gaussian tensors shaped like ``params``, drawn on the CPU from ``generator``.

    Drawing on the CPU makes the numbers the same whichever device the parameters live on.

    Example:
        >>> [v.shape for v in random_normal_like([torch.zeros(2, 3)], torch.Generator().manual_seed(0))]
        [torch.Size([2, 3])]
    """
    return [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]


def rademacher_like(params: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """Random +-1 tensors shaped like ``params`` (Rademacher), drawn on the CPU from ``generator``.

    Example:
        >>> sorted(set(rademacher_like([torch.zeros(100)], torch.Generator().manual_seed(0))[0].tolist()))
        [-1.0, 1.0]
    """
    return [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]


def top_eigenvalue(closure: LossClosure, params: Sequence[torch.Tensor], generator: torch.Generator,
                   max_iterations: int = 50, tolerance: float = 1e-3,
                   on_step: StepCallback | None = None) -> PowerIteration:
    """The Hessian's eigenvalue of largest magnitude, by power iteration on Hessian-vector products.

    Starts from a Gaussian vector, repeats v <- Hv/||Hv||, and estimates the eigenvalue by the
    Rayleigh quotient v^T H v; stops when its relative change drops below ``tolerance``. At a
    trained minimum the dominant eigenvalue is the top positive one; where the Hessian has a
    negative eigenvalue of larger magnitude, that one is found (and reported with its sign).

    Example:
        >>> x = torch.zeros(2, requires_grad=True)
        >>> a = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        >>> result = top_eigenvalue(lambda: 0.5 * x @ a @ x, [x], torch.Generator().manual_seed(0))
        >>> round(result.eigenvalue, 3), result.converged
        (3.0, True)
    """
    if max_iterations < 1 or not tolerance > 0:
        raise ValueError("power iteration needs max_iterations >= 1 and tolerance > 0")
    vector = random_normal_like(params, generator)
    length = norm(vector)
    vector = [v / length for v in vector]
    history: list[float] = []
    changes: list[float] = []
    converged = False
    for _ in range(max_iterations):
        product = hessian_vector_product(closure, params, vector)
        history.append(float(dot(vector, product)))
        if on_step is not None:
            on_step()
        length = norm(product)
        if length == 0.0:  # H v = 0: the Hessian vanishes along every direction power iteration can reach
            converged = True
            break
        vector = [p / length for p in product]
        if len(history) > 1:
            changes.append(abs(history[-1] - history[-2]) / max(abs(history[-1]), 1e-30))
            if changes[-1] < tolerance:
                converged = True
                break
    return PowerIteration(history[-1], tuple(history), tuple(changes), converged, tolerance)


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's trace estimate: the mean of ``samples`` (v^T H v) and its standard error.

    Example:
        >>> TraceEstimate(10.0, 0.5, (9.5, 10.5)).probes
        2
    """

    trace: float
    standard_error: float
    samples: tuple[float, ...]

    @property
    def probes(self) -> int:
        """How many random probes were averaged."""
        return len(self.samples)


def hessian_trace(closure: LossClosure, params: Sequence[torch.Tensor], generator: torch.Generator,
                  probes: int = 30, on_step: StepCallback | None = None) -> TraceEstimate:
    """Hutchinson's estimator of tr(H): the mean of v^T H v over Rademacher probes v.

    Unbiased, with variance 2 * sum of squared off-diagonal entries per probe, so the standard
    error (sample std / sqrt(probes)) says how far to trust it.

    Example:
        >>> x = torch.zeros(3, requires_grad=True)
        >>> a = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
        >>> hessian_trace(lambda: 0.5 * x @ a @ x, [x], torch.Generator().manual_seed(0), probes=4).trace
        6.0
    """
    if probes < 2:
        raise ValueError("Hutchinson's estimator needs at least 2 probes for a standard error")
    samples = []
    for _ in range(probes):
        probe = rademacher_like(params, generator)
        samples.append(float(dot(probe, hessian_vector_product(closure, params, probe))))
        if on_step is not None:
            on_step()
    mean = sum(samples) / probes
    variance = sum((s - mean) ** 2 for s in samples) / (probes - 1)
    return TraceEstimate(mean, math.sqrt(variance / probes), tuple(samples))
