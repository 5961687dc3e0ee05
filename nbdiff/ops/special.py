"""Special functions NumPy lacks, vectorised in NumPy (SciPy is not a dependency): ``erf``.

``erf`` is a piecewise Chebyshev approximation accurate to a few units in the last place of float64 over the whole
real line. Its coefficients are not a table copied from elsewhere: on first use they are fitted (Chebyshev
interpolation) to a 60-digit ``decimal`` evaluation of the series

    erf(x) = 2/sqrt(pi) * exp(-x**2) * sum_n (2 x**2)**n / (1 * 3 * ... * (2n + 1)) * x

whose terms are all positive, so the decimal sum has no cancellation. The real line is split in three:

- ``|x| < 1``: ``erf(x) = x * S(x**2)`` with ``S(u) = erf(sqrt(u)) / sqrt(u)`` (exact relative accuracy near 0);
- ``1 <= |x| < 6``: ``erf(x) = 1 - exp(-x**2) * G(x)`` with ``G(x) = erfc(x) * exp(x**2)``, a slowly varying
  function (about ``1 / (x sqrt(pi))``), fitted on three intervals;
- ``|x| >= 6``: ``erfc(x) < 2.2e-17`` is below half an ulp of 1, so ``erf(x)`` rounds to exactly ``+-1``.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np

_DIGITS = 60  # working precision of the reference evaluation
_SMALL_LIMIT = 1.0  # below: erf(x) = x * S(x**2)
_ONE_LIMIT = 6.0  # at and above: erf(x) == 1.0 in float64
_TAIL_INTERVALS = ((_SMALL_LIMIT, 2.0), (2.0, 3.5), (3.5, _ONE_LIMIT))  # G(x) = erfc(x) exp(x**2) is fitted on each
_NODES = 32  # Chebyshev nodes per interval (the fit is then truncated where coefficients drop below float64)
_CUTOFF = 2.0**-60  # coefficients smaller than this (relative to the largest) are dropped


def _decimal_arctan_inverse(k: int) -> Decimal:
    """``arctan(1/k)`` for an integer ``k > 1``, by its alternating Taylor series (in the current context)."""
    x = Decimal(1) / k
    x2 = x * x
    power, total, n = x, Decimal(0), 0
    threshold = Decimal(10) ** -(_DIGITS + 5)
    while power > threshold:
        term = power / (2 * n + 1)
        total += -term if n % 2 else term
        power *= x2
        n += 1
    return total


def _decimal_pi() -> Decimal:
    """pi by Machin's formula ``pi = 16 arctan(1/5) - 4 arctan(1/239)`` (in the current context)."""
    return 16 * _decimal_arctan_inverse(5) - 4 * _decimal_arctan_inverse(239)


def _decimal_erf_over_x(u: Decimal, two_over_sqrt_pi: Decimal) -> Decimal:
    """``erf(x) / x`` at ``u = x**2 >= 0`` by the positive-term series in the module docstring."""
    term, total, n = Decimal(1), Decimal(0), 0
    threshold = Decimal(10) ** -(_DIGITS + 5)
    while term > threshold * total or n == 0:
        total += term
        n += 1
        term = term * 2 * u / (2 * n + 1)
    return two_over_sqrt_pi * (-u).exp() * total


def _decimal_cos(angle: Decimal) -> Decimal:
    """``cos(angle)`` for ``0 <= angle <= 2 pi`` by its Taylor series (in the current context)."""
    term, total, n = Decimal(1), Decimal(0), 0
    threshold = Decimal(10) ** -(_DIGITS + 5)
    while abs(term) > threshold or n == 0:
        total += term
        n += 2
        term = -term * angle * angle / ((n - 1) * n)
    return total


@functools.cache
def _cosines(count: int) -> tuple[Decimal, ...]:
    """``cos(pi * m / (2 count))`` for ``m`` over one period: every cosine the nodes and the fit need."""
    with localcontext() as context:
        context.prec = _DIGITS
        pi = _decimal_pi()
        return tuple(_decimal_cos(pi * m / (2 * count)) for m in range(4 * count))


def _nodes(low: float, high: float) -> list[Decimal]:
    """The Chebyshev nodes ``cos(pi (k + 1/2) / n)`` mapped to ``[low, high]``."""
    cosines = _cosines(_NODES)
    middle = (Decimal(high) + Decimal(low)) / 2
    half = (Decimal(high) - Decimal(low)) / 2
    return [middle + half * cosines[2 * k + 1] for k in range(_NODES)]


def _chebyshev_fit(values: list[Decimal]) -> np.ndarray:
    """Chebyshev coefficients (first one halved) of the interpolant through ``values`` at the nodes, in float64,
    dropping the trailing ones that are negligible in float64."""
    count = len(values)
    cosines = _cosines(count)  # cos(pi j (k + 1/2) / count) = cosines[j (2k + 1) mod 4 count]
    coefficients = []
    for j in range(count):
        total = sum(value * cosines[j * (2 * k + 1) % (4 * count)] for k, value in enumerate(values))
        coefficients.append(total * 2 / count)
    coefficients[0] /= 2
    result = np.array([float(c) for c in coefficients])
    keep = np.nonzero(np.abs(result) >= _CUTOFF * np.max(np.abs(result)))[0]
    return result[: keep[-1] + 1]


@functools.cache
def _pieces() -> tuple[np.ndarray, tuple[tuple[float, float, np.ndarray], ...]]:
    """The fitted coefficients: ``S`` on ``u in [0, 1]`` and ``G`` on each tail interval (computed once)."""
    with localcontext() as context:
        context.prec = _DIGITS
        two_over_sqrt_pi = 2 / _decimal_pi().sqrt()
        small = _chebyshev_fit([_decimal_erf_over_x(u, two_over_sqrt_pi) for u in _nodes(0.0, _SMALL_LIMIT**2)])
        tails = []
        for low, high in _TAIL_INTERVALS:
            values = []
            for x in _nodes(low, high):
                erfc = 1 - x * _decimal_erf_over_x(x * x, two_over_sqrt_pi)
                values.append(erfc * (x * x).exp())
            tails.append((low, high, _chebyshev_fit(values)))
    return small, tuple(tails)


def _clenshaw(coefficients: np.ndarray, t: np.ndarray, low: float, high: float) -> np.ndarray:
    """Evaluate a Chebyshev series on ``[low, high]`` at ``t`` (Clenshaw's recurrence)."""
    s = (2.0 * t - (low + high)) / (high - low)
    two_s = 2.0 * s
    b1 = np.zeros_like(s)
    b2 = np.zeros_like(s)
    for c in coefficients[:0:-1]:
        b1, b2 = two_s * b1 - b2 + c, b1
    return s * b1 - b2 + coefficients[0]


def float_dtype_for(dtype: np.dtype) -> np.dtype:
    """The dtype NumPy's float ufuncs (``np.exp``) give for ``dtype``: floats stay, integers and bool promote."""
    if dtype.kind not in "biuf":
        raise TypeError(f"erf: unsupported dtype {dtype}; expected a boolean, integer or float array")
    return np.result_type(dtype, np.float16)


def erf(x: np.ndarray | float) -> np.ndarray:
    """The error function, elementwise, to float64 accuracy; float32 in gives float32 out (as ``np.exp`` does)."""
    array = np.asarray(x)
    out_dtype = float_dtype_for(array.dtype)
    v = array.astype(np.float64).reshape(-1)
    a = np.abs(v)
    result = np.copysign(np.ones_like(v), v)  # right for |x| >= _ONE_LIMIT (and +-inf); the rest is overwritten
    result[np.isnan(v)] = np.nan
    small_coefficients, tails = _pieces()
    small = a < _SMALL_LIMIT
    xs = v[small]
    result[small] = xs * _clenshaw(small_coefficients, xs * xs, 0.0, _SMALL_LIMIT**2)
    for low, high, coefficients in tails:
        inside = (a >= low) & (a < high)
        at = a[inside]
        erfc = np.exp(-(at * at)) * _clenshaw(coefficients, at, low, high)
        result[inside] = np.copysign(1.0 - erfc, v[inside])
    return result.reshape(array.shape).astype(out_dtype, copy=False)


__all__ = ["erf"]
