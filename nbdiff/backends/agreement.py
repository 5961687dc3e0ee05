"""Agreement between a compiled result and the interpreter's: same dtype and shape, values within a tolerance by
dtype. The interpreter is the specification; a compiled backend is used only while it agrees.

Compiled transcendentals (libm through LLVM) and NumPy's SIMD loops may differ in the last ulps, and sums
accumulate in another order, so floats are compared with a relative tolerance plus an absolute one scaled by the
result's magnitude (``scale``: its largest finite value, or for a sum the sum of its terms' magnitudes, which is
what a summation's rounding error is proportional to). A float64 result computed through float32 values (``exp`` of
a float32 times an int64) gets float32's tolerance. Integers and booleans must be equal; NaN must match NaN.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

RELATIVE_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


def disagreement(
    expected: np.ndarray, got: np.ndarray, scale: float | None = None, precision: str | None = None
) -> str | None:
    """Why ``got`` does not agree with the interpreter's ``expected`` (None when it does). ``precision`` is the
    least precise float dtype the computation went through, when less precise than the result's (float32 values
    feeding a float64 result carry float32's rounding differences)."""
    expected, got = np.asarray(expected), np.asarray(got)
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, the interpreter's is {expected.dtype}"
    if got.shape != expected.shape:
        return f"shape {got.shape}, the interpreter's is {expected.shape}"
    tolerance = RELATIVE_TOLERANCE.get(expected.dtype.name)
    if tolerance is not None and precision is not None:
        tolerance = max(tolerance, RELATIVE_TOLERANCE.get(precision, tolerance))
    if tolerance is None:
        if np.array_equal(expected, got):
            return None
        at = tuple(int(i) for i in np.argwhere(expected != got)[0])
        return f"value {got[at]!r} at {at}, the interpreter's is {expected[at]!r}"
    with np.errstate(all="ignore"):
        finite = np.isfinite(expected)
        if scale is None:
            scale = float(np.max(np.abs(expected[finite]), initial=0.0))
        limit = tolerance * (np.abs(expected) + scale)
        close = (np.abs(got - expected) <= limit) | (np.isnan(expected) & np.isnan(got))
        close |= ~finite & (got == expected)  # the same infinity
    if bool(np.all(close)):
        return None
    where = tuple(int(i) for i in np.argwhere(~close)[0])
    return (
        f"value {got[where]!r} at {where}, the interpreter's is {expected[where]!r} "
        f"(relative tolerance {tolerance:g} for {expected.dtype.name})"
    )


def least_precision(dtypes: Iterable[str]) -> str | None:
    """The least precise float dtype among ``dtypes`` (None without floats): the tolerance a computation through
    values of these dtypes needs."""
    floats = [dtype for dtype in dtypes if dtype in RELATIVE_TOLERANCE]
    return max(floats, key=RELATIVE_TOLERANCE.__getitem__) if floats else None


def outputs_disagreement(
    expected: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    scales: Sequence[float | None] | None = None,
    precision: str | None = None,
) -> str | None:
    """The first output that disagrees, named by position (None when all agree)."""
    if len(expected) != len(got):
        return f"{len(got)} outputs, the interpreter gives {len(expected)}"
    for position, (e, g) in enumerate(zip(expected, got)):
        problem = disagreement(e, g, scales[position] if scales is not None else None, precision)
        if problem is not None:
            return f"output {position}: {problem}"
    return None
