"""``nbdiff.ops.special.erf`` against ``math.erf``: float64 accuracy over the whole real line, dtypes, edge values."""

from __future__ import annotations

import math
from decimal import localcontext

import numpy as np
import pytest

from nbdiff.ops import special

REL_TOL = 1e-15  # about 4.5 units in the last place near 1
ULPS = 4  # the same bound in units in the last place (also meaningful for subnormal results)


def reference(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(float(v)) for v in np.ravel(x)]).reshape(np.shape(x))


def assert_accurate(x: np.ndarray) -> None:
    got = special.erf(x)
    want = reference(x)
    error = np.abs(got - want)
    normal = np.abs(want) >= np.finfo(np.float64).tiny
    worst_relative = np.max(error[normal] / np.abs(want[normal]), initial=0.0)
    assert worst_relative <= REL_TOL, (
        f"relative error {worst_relative:.3g} at x={x[normal][np.argmax(error[normal])]!r}"
    )
    in_ulps = error / np.spacing(np.abs(want))
    assert np.max(in_ulps, initial=0.0) <= ULPS, f"{np.max(in_ulps)} ulps at x={x.ravel()[np.argmax(in_ulps)]!r}"


def test_dense_grid_across_every_piece():
    assert_accurate(np.linspace(-7.0, 7.0, 140_001))


def test_random_points_on_every_scale():
    rng = np.random.default_rng(7)
    magnitude = 10.0 ** rng.uniform(-320.0, 3.0, 100_000)
    assert_accurate(rng.choice([-1.0, 1.0], magnitude.shape) * magnitude)


def test_piece_boundaries_and_their_neighbours():
    edges = np.array([special._SMALL_LIMIT, *(high for _, high in special._TAIL_INTERVALS)])
    points = np.concatenate([edges, np.nextafter(edges, 0.0), np.nextafter(edges, np.inf)])
    assert_accurate(np.concatenate([points, -points]))


def test_tails_round_to_one():
    x = np.array([5.9, 6.0, 6.5, 10.0, 27.0, 1e10, 1e300, np.finfo(np.float64).max])
    assert_accurate(x)
    assert np.all(special.erf(x[2:]) == 1.0)
    assert np.all(special.erf(-x[2:]) == -1.0)


def test_zero_tiny_and_subnormal_arguments():
    x = np.array([0.0, 5e-324, 1e-310, 2.2250738585072014e-308, 1e-200, 1e-20, 1e-8])
    assert_accurate(np.concatenate([x, -x]))
    zeros = special.erf(np.array([0.0, -0.0]))
    assert zeros.tolist() == [0.0, 0.0]
    assert np.signbit(zeros).tolist() == [False, True]  # erf(-0.0) is -0.0, as math.erf gives


def test_infinities_and_nan():
    result = special.erf(np.array([np.inf, -np.inf, np.nan]))
    assert result[0] == 1.0 and result[1] == -1.0 and np.isnan(result[2])


def test_odd_and_monotone():
    x = np.linspace(0.0, 6.5, 50_001)
    y = special.erf(x)
    np.testing.assert_array_equal(special.erf(-x), -y)
    assert np.all(np.diff(y) >= 0.0)
    assert np.all(np.abs(y) <= 1.0)


def test_float32_in_float32_out():
    x = np.linspace(-4.0, 4.0, 1001, dtype=np.float32)
    y = special.erf(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, reference(x.astype(np.float64)).astype(np.float32), rtol=1e-7, atol=1e-30)


@pytest.mark.parametrize(
    "dtype,expected",
    [("float64", "float64"), ("float32", "float32"), ("int64", "float64"), ("int16", "float32"), ("bool", "float16")],
)
def test_result_dtype_follows_numpy_float_functions(dtype, expected):
    x = np.ones((2, 3), dtype=dtype)
    assert special.erf(x).dtype == np.dtype(expected) == np.exp(x).dtype


def test_shapes_are_kept():
    assert special.erf(np.float64(0.5)).shape == ()
    assert special.erf(np.zeros((2, 0, 3))).shape == (2, 0, 3)
    x = np.linspace(-3.0, 3.0, 24).reshape(2, 3, 4)
    np.testing.assert_array_equal(special.erf(x), special.erf(x.ravel()).reshape(2, 3, 4))
    assert special.erf(0.5) == pytest.approx(math.erf(0.5), rel=1e-15)


def test_unsupported_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="erf: unsupported dtype complex128"):
        special.erf(np.ones(3, dtype=complex))


def test_the_fit_uses_an_accurate_pi_and_drops_negligible_coefficients():
    with localcontext() as context:
        context.prec = special._DIGITS
        assert float(special._decimal_pi()) == math.pi
        assert float(special._decimal_cos(special._decimal_pi() / 3)) == pytest.approx(0.5, abs=1e-17)
    small, tails = special._pieces()
    for coefficients in (small, *(c for _, _, c in tails)):
        assert 5 < len(coefficients) < special._NODES  # the series was truncated, not cut off by the node count
        assert abs(coefficients[-1]) < 1e-16 * np.max(np.abs(coefficients))
