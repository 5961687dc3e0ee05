"""Accuracy of nbdiff's vectorisable math (``nbdiff.backends.vmath``): max error in ulps per function and dtype.

For each function and dtype, the function compiled over arrays from the text kernels get (``vmath.array_function``)
is compared with:
  - float32: NumPy's float64 function (``nbdiff.ops.special.erf`` for erf, the ops' own NumPy code for sigmoid and
    softplus) on the same inputs, whose value is exact to far below a float32 ulp, over a dense sweep;
  - float64: mpmath at 120 bits (correctly rounded reference) on a random subsample of the sweep, and NumPy over
    the whole sweep (NumPy itself is within about 1 ulp of the correctly rounded value);
  - special values (NaN, +-inf, +-0, subnormals, the overflow and underflow limits): identical to NumPy's, zeros'
    signs included ("yes" in the table).
The sweep per function: a uniform sweep over its interesting range, standard normals, small values (1e-3 scale),
and magnitudes spread over every exponent (log-uniform), each ``--points`` long. The ulp of a result is the spacing
of the reference value in the dtype (the smallest subnormal below the normal range). sin and cos are swept over
their documented range (``|x| <= vmath.SIN_COS_LIMIT``).

Run: ``python benchmarks/bench_math_accuracy.py`` (``--points N``, ``--mpmath N``); it prints the table in Markdown,
as docs/architecture.md has it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nbdiff.backends import vmath

RANGES = {
    "exp": (-750.0, 720.0),
    "log": (0.0, 1e6),
    "log1p": (-1.0, 1e3),
    "expm1": (-50.0, 720.0),
    "tanh": (-25.0, 25.0),
    "sin": (-vmath.SIN_COS_LIMIT, vmath.SIN_COS_LIMIT),
    "cos": (-vmath.SIN_COS_LIMIT, vmath.SIN_COS_LIMIT),
    "sigmoid": (-750.0, 750.0),
    "softplus": (-750.0, 750.0),
    "erf": (-7.0, 7.0),
}
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, -1e-310, 1e-45, -1e-45, 2.0**-1022]
LIMITS = [709.78, 709.79, 710.0, -745.1, -745.2, 88.72, 88.73, -103.9, -104.0, 1.0, -1.0, 1e300]


def mpmath_reference(name: str, x: float) -> object:
    """``name`` at ``x`` to 120 bits (an mpmath number)."""
    import mpmath

    value = mpmath.mpf(x)
    if name == "sigmoid":
        return 1 / (1 + mpmath.exp(-value))
    if name == "softplus":
        return mpmath.log1p(mpmath.exp(value))
    return getattr(mpmath, name)(value)


def sweep(name: str, dtype: str, points: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = RANGES[name]
    spread = np.exp(rng.uniform(-745, 7, points)) * rng.choice([-1.0, 1.0], points)
    if name in ("sin", "cos"):
        spread = spread[np.abs(spread) <= vmath.SIN_COS_LIMIT]
    parts = [rng.uniform(low, high, points), rng.standard_normal(points), rng.standard_normal(points) * 1e-3, spread]
    with np.errstate(over="ignore"):
        return np.concatenate(parts).astype(dtype)


def mpmath_ulps(name: str, x: np.ndarray, got: np.ndarray) -> float:
    """The largest error in ulps against mpmath on ``x`` (float64)."""
    import mpmath

    mpmath.mp.prec = 120
    worst = 0.0
    for value, result in zip(x.tolist(), got.tolist()):
        exact = mpmath_reference(name, value)
        if not isinstance(exact, mpmath.mpf):  # log of a negative number: complex (NaN here, checked as a special)
            continue
        nearest = float(exact)
        if not np.isfinite(nearest) or not np.isfinite(result):
            continue
        spacing = max(float(np.spacing(abs(nearest))), 5e-324)
        worst = max(worst, float(abs(mpmath.mpf(result) - exact)) / spacing)
    return worst


def specials_identical(name: str, dtype: str) -> bool:
    """Whether NaN, infinities, zeros and the limits give NumPy's non-finite values and zeros, signs included."""
    with np.errstate(over="ignore"):
        x = np.array(SPECIALS + LIMITS + [-v for v in LIMITS], dtype=dtype)
    if name in ("sin", "cos"):
        x = x[(np.abs(x) <= vmath.SIN_COS_LIMIT) | np.isinf(x) | np.isnan(x)]
    got = vmath.array_function(name, dtype)(x)
    expected = vmath.numpy_reference(name, x)
    special = ~np.isfinite(expected) | (expected == 0)
    same = np.array_equal(got[special], expected[special], equal_nan=True)
    signed = special & ~np.isnan(expected)
    return bool(same and np.array_equal(np.signbit(got[signed]), np.signbit(expected[signed])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000, help="points per part of each sweep")
    parser.add_argument("--mpmath", type=int, default=20_000, help="float64 points checked against mpmath")
    args = parser.parse_args()
    try:
        import mpmath  # noqa: F401
    except ImportError:
        mpmath_available = False
    else:
        mpmath_available = True
    rows = []
    for name in vmath.MATH_FUNCTIONS:
        start = time.perf_counter()
        x64 = sweep(name, "float64", args.points)
        got64 = vmath.array_function(name, "float64")(x64)
        numpy64 = float(vmath.ulp_errors(got64, vmath.numpy_reference(name, x64), "float64").max())
        if mpmath_available:
            pick = np.random.default_rng(1).choice(x64.size, min(args.mpmath, x64.size), replace=False)
            exact64: float | None = mpmath_ulps(name, x64[pick], got64[pick])
        else:
            exact64 = None
        x32 = sweep(name, "float32", args.points)
        got32 = vmath.array_function(name, "float32")(x32)
        exact32 = float(vmath.ulp_errors(got32, vmath.numpy_reference(name, x32.astype(np.float64)), "float32").max())
        specials = all(specials_identical(name, dtype) for dtype in ("float64", "float32"))
        rows.append((name, exact64, numpy64, exact32, specials, vmath.ULP_BOUNDS[name, "float64"]))
        rows[-1] += (vmath.ULP_BOUNDS[name, "float32"], time.perf_counter() - start)
    header = (
        "| function | float64 vs mpmath | float64 vs NumPy | float32 vs float64 | specials as NumPy | "
        "documented bound f64 / f32 |"
    )
    print(f"sweep: 4 x {args.points} points per function and dtype; mpmath: {args.mpmath} float64 points")
    print(header)
    print("|---|---|---|---|---|---|")
    for name, exact64, numpy64, exact32, specials, bound64, bound32, _ in rows:
        mp = f"{exact64:.2f}" if exact64 is not None else "(mpmath not installed)"
        print(
            f"| {name} | {mp} | {numpy64:.2f} | {exact32:.2f} | {'yes' if specials else 'NO'} | "
            f"{bound64:g} / {bound32:g} |"
        )
    failing = [
        r[0]
        for r in rows
        if (r[1] is not None and r[1] > r[5]) or r[3] > r[6] or not r[4] or (r[1] is None and r[2] > r[5] + 1)
    ]
    print("within the documented bounds" if not failing else f"OUTSIDE the documented bounds: {', '.join(failing)}")


if __name__ == "__main__":
    main()
