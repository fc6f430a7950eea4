"""Bounds on numbers from the user or a file: finite, and representable in float32 where they end up in float32.

``--lr 1e39`` overflows a float32 optimizer step, ``--std 1e-45`` is a float32 denormal
whose reciprocal is infinite, and ``--scale 1e39`` makes every input infinite. Each is
refused here, in one line, before anything runs.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from edgefault.errors import EdgefaultError

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the least normal float32
MAX_STEPS = 100_000  # the most epochs, chips, iterations or probes any setting may ask for


def check_finite(value: float, what: str, *, float32: bool = True, positive: bool = False,
                 reciprocal: bool = False) -> float:
    """``value`` as a float if it is finite (in float32 with ``float32``), else one user error.

    ``positive`` demands ``value > 0``; ``reciprocal`` demands that ``1 / value`` is finite too
    (a divisor such as a std) and, with ``float32``, that ``value`` is not a float32 denormal.

    Example:
        >>> check_finite(0.3081, "--std", positive=True, reciprocal=True)
        0.3081
        >>> check_finite(1e39, "--lr")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: --lr must be a finite number within float32's range (|x| <= 3.4e+38), got 1e+39
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise EdgefaultError(f"{what} must be a number, got {value!r}") from None
    limit = FLOAT32_MAX if float32 else math.inf
    if not math.isfinite(number) or abs(number) > limit:
        within = " within float32's range (|x| <= 3.4e+38)" if float32 else ""
        raise EdgefaultError(f"{what} must be a finite number{within}, got {value!r}")
    if positive and not number > 0:
        raise EdgefaultError(f"{what} must be positive, got {value!r}")
    if reciprocal:
        tiny = FLOAT32_TINY if float32 else 1.0 / 1.7976931348623157e308
        if abs(number) < tiny:
            raise EdgefaultError(f"{what} must be at least {tiny:.3g} in size (its reciprocal must be finite"
                                 f"{' in float32' if float32 else ''}), got {value!r}")
    return number


def check_whole(value: Any, what: str, low: int, high: int) -> int:
    """``value`` if it is a whole number (not a bool) in ``[low, high]``, else one user error.

    Example:
        >>> check_whole(3, "chips", 2, 100)
        3
        >>> check_whole(True, "seeds", 1, 5)
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: seeds must be a whole number in [1, 5], got True
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EdgefaultError(f"{what} must be a whole number in [{low}, {high}], got {value!r}")
    return value


def check_rates(values: Iterable[Any], what: str, *, zero: bool = False) -> tuple[float, ...]:
    """``values`` as a non-empty tuple of floats in ``(0, 1]`` (``[0, 1]`` with ``zero``), else one user error.

    Example:
        >>> check_rates([0.01, 1e-3], "rates")
        (0.01, 0.001)
        >>> check_rates([0.0], "act_rates")
        Traceback (most recent call last):
        ...
        edgefault.errors.EdgefaultError: act_rates must be a non-empty list in (0, 1], got (0.0,)
    """
    rates = tuple(float(r) for r in values)
    if not rates or any(not (0 <= r <= 1 if zero else 0 < r <= 1) for r in rates):
        raise EdgefaultError(f"{what} must be a non-empty list in {'[0' if zero else '(0'}, 1], got {rates}")
    return rates
