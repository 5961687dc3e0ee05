"""Op-table rows for elementwise ops (arithmetic, transcendental functions, comparisons, casts)."""

from __future__ import annotations

import math

import numpy as np

import nbdiff as nd
from tests.ops.table import BadInput, OpCase, call_on_unknown_shapes, int_domain


def _unary(name, reference, domain="real", **kwargs):
    return OpCase(name, getattr(nd, name), reference, [(3, 4)], [domain], **kwargs)


def _binary(name, reference, domains=("real",), **kwargs):
    return OpCase(name, getattr(nd, name), reference, [(3, 4), (3, 4)], list(domains), **kwargs)


CASES = [
    _binary(
        "add",
        np.add,
        bad=[
            BadInput(
                "shape mismatch",
                lambda: nd.vector("a", shape=(3,)) + nd.vector("b", shape=(4,)),
                nd.errors.ShapeError,
                "cannot be broadcast",
            ),
            BadInput(
                "call-time shape mismatch",
                lambda: nd.function([a := nd.vector("a"), b := nd.vector("b")], a + b)([1.0, 2.0], [1.0, 2.0, 3.0]),
                nd.errors.ShapeError,
                "(2,)",
            ),
        ],
    ),
    OpCase("add", nd.add, np.add, [(3, 1), (4,)], variant="broadcast"),
    OpCase("add", lambda a: a + 2, lambda a: a + 2, [(3,)], variant="python-int"),
    _binary("sub", np.subtract),
    OpCase("sub", lambda a, b: a - b, np.subtract, [(2, 3, 1), (1, 4)], variant="broadcast"),
    _binary("mul", np.multiply),
    OpCase("mul", lambda a, b: a * b, np.multiply, [(), (2, 3)], variant="scalar-broadcast"),
    _binary("true_divide", np.true_divide, ("real", "nonzero")),
    OpCase(
        "true_divide", lambda a, b: a / b, np.true_divide, [(1, 3), (2, 1)], ["real", "nonzero"], variant="broadcast"
    ),
    _binary("power", np.power, ("positive", "real")),
    OpCase("power", lambda a: a**2, lambda a: a**2, [(5,)], variant="square"),
    OpCase("power", lambda a: a**3.5, lambda a: a**3.5, [(5,)], ["positive"], variant="constant-exponent"),
    _unary(
        "negative",
        np.negative,
        bad=[BadInput("bool input", lambda: -_vector("bool"), nd.errors.DTypeError, "does not accept bool")],
    ),
    _unary("exp", np.exp),
    _unary("log", np.log, "positive"),
    _unary("tanh", np.tanh),
    _unary("sin", np.sin),
    _unary("cos", np.cos),
    OpCase(
        "astype",
        lambda a: a.astype("float32"),
        lambda a: a.astype("float32"),
        [(4,)],
        dtypes=("float64",),
        variant="float64-to-float32",
        grad=False,
    ),  # finite differences cannot see through rounding
    OpCase("astype", lambda a: a.astype("float64"), lambda a: a.astype("float64"), [(4,)], variant="to-float64"),
    OpCase("astype", lambda a: a.astype("int64"), lambda a: a.astype("int64"), [(4,)], grad=False, variant="to-int"),
]


# ---------------------------------------------------------------------------------------------------------------
# Domains for piecewise functions and comparisons
# ---------------------------------------------------------------------------------------------------------------
def _ties(rng, shape):
    """Small whole numbers as floats, so comparisons meet equal values."""
    return rng.integers(-2, 3, shape).astype("float64")


def _away_from_half(rng, shape):
    """Values at least 0.3 away from the clip bounds -0.5 and 0.5 (and on both sides of them)."""
    return rng.choice([-1.5, -1.0, 0.0, 1.0, 1.5], shape) + rng.uniform(-0.2, 0.2, shape)


def _wide(rng, shape):
    """Large arguments: the saturated regions of sigmoid and softplus."""
    return rng.uniform(-40.0, 40.0, shape)


def _erf_range(rng, shape):
    """Every piece of the erf approximation: |x| < 1, [1, 2), [2, 3.5), [3.5, 6) and beyond."""
    return rng.uniform(-6.5, 6.5, shape)


def _int8(rng, shape):
    return rng.integers(-5, 5, shape).astype("int8")


def _low_bound(rng, shape):
    return rng.uniform(-1.5, -0.5, shape)


def _high_bound(rng, shape):
    return rng.uniform(0.5, 1.5, shape)


def _erf_reference(a):
    """math.erf elementwise, in the dtype NumPy's float functions give (float32 stays float32)."""
    values = np.array([math.erf(float(v)) for v in np.ravel(a)]).reshape(np.shape(a))
    return values.astype(np.exp(a).dtype)


def _vector(dtype, name="v"):
    return nd.vector(name, dtype=dtype)


_FLOAT_ONLY = ("float64",)  # rows whose inputs are integers or booleans: no float32 variant

CASES += [
    # -- piecewise and power functions --------------------------------------------------------------------------
    _unary(
        "abs",
        np.abs,
        "away",
        bad=[
            BadInput(
                "two inputs",
                lambda: nd.abs(_vector("float64"), _vector("float64")),
                nd.errors.DTypeError,
                "expected 1 input(s)",
            )
        ],
    ),
    OpCase("abs", lambda a: abs(a), np.abs, [(2, 3)], ["away"], variant="operator"),
    OpCase("abs", nd.abs, np.abs, [(5,)], [int_domain(-4, 4)], dtypes=_FLOAT_ONLY, grad=False, variant="int"),
    _unary(
        "sign",
        np.sign,
        "away",
        bad=[BadInput("bool input", lambda: nd.sign(_vector("bool")), nd.errors.DTypeError, "does not accept bool")],
    ),
    OpCase("sign", nd.sign, np.sign, [(6,)], [int_domain(-3, 3)], dtypes=_FLOAT_ONLY, grad=False, variant="int"),
    _unary(
        "sqrt",
        np.sqrt,
        "positive",
        bad=[BadInput("int8 gives float16", lambda: nd.sqrt(_vector("int8")), nd.errors.DTypeError, "float16")],
    ),
    OpCase("sqrt", nd.sqrt, np.sqrt, [(4,)], [int_domain(0, 9)], dtypes=_FLOAT_ONLY, grad=False, variant="int"),
    _unary("square", np.square),
    OpCase("square", nd.square, np.square, [(4,)], [int_domain(-9, 9)], dtypes=_FLOAT_ONLY, grad=False, variant="int"),
    _unary(
        "relu",
        lambda a: np.maximum(a, 0),
        "away",
        bad=[
            BadInput("two inputs", lambda: nd.relu(_vector("float64"), 0.0), nd.errors.DTypeError, "expected 1 input")
        ],
    ),
    OpCase(
        "relu",
        nd.relu,
        lambda a: np.maximum(a, 0),
        [(5,)],
        [int_domain(-4, 4)],
        dtypes=_FLOAT_ONLY,
        grad=False,
        variant="int",
    ),
    # -- transcendental functions -------------------------------------------------------------------------------
    _unary("log1p", np.log1p, "unit"),
    _unary("expm1", np.expm1),
    _unary("tan", np.tan, "small"),
    _unary("arctan", np.arctan),
    _unary("sinh", np.sinh),
    _unary("cosh", np.cosh),
    _unary(
        "sigmoid",
        lambda a: 1 / (1 + np.exp(-a)),
        bad=[BadInput("int8 gives float16", lambda: nd.sigmoid(_vector("int8")), nd.errors.DTypeError, "float16")],
    ),
    OpCase("sigmoid", nd.sigmoid, lambda a: 1 / (1 + np.exp(-a)), [(3, 4)], [_wide], variant="wide"),
    OpCase(
        "sigmoid",
        nd.sigmoid,
        lambda a: 1 / (1 + np.exp(-a)),
        [(4,)],
        [int_domain(-3, 3)],
        dtypes=_FLOAT_ONLY,
        grad=False,
        variant="int",
    ),
    _unary("softplus", lambda a: np.log1p(np.exp(a))),
    OpCase("softplus", nd.softplus, lambda a: np.logaddexp(0, a), [(3, 4)], [_wide], variant="wide"),
    _unary("erf", _erf_reference),
    OpCase("erf", nd.erf, _erf_reference, [(4, 5)], [_erf_range], variant="all-pieces"),
    OpCase("erf", nd.erf, _erf_reference, [(4,)], [int_domain(-3, 3)], dtypes=_FLOAT_ONLY, grad=False, variant="int"),
    # -- maximum, minimum ---------------------------------------------------------------------------------------
    _binary(
        "maximum",
        np.maximum,
        bad=[
            BadInput(
                "shape mismatch",
                lambda: nd.maximum(nd.vector("a", shape=(3,)), nd.vector("b", shape=(2,))),
                nd.errors.ShapeError,
                "cannot be broadcast",
            )
        ],
    ),
    OpCase("maximum", nd.maximum, np.maximum, [(3, 1), (4,)], variant="broadcast"),
    OpCase(
        "maximum", lambda a: nd.maximum(a, 0.5), lambda a: np.maximum(a, 0.5), [(5,)], ["away"], variant="python-float"
    ),
    OpCase("maximum", lambda a: nd.maximum(a, a), lambda a: np.maximum(a, a), [(5,)], variant="ties"),
    _binary(
        "minimum",
        np.minimum,
        bad=[
            BadInput(
                "shape mismatch",
                lambda: nd.minimum(nd.matrix("a", shape=(2, 3)), nd.vector("b", shape=(2,))),
                nd.errors.ShapeError,
                "cannot be broadcast",
            )
        ],
    ),
    OpCase("minimum", nd.minimum, np.minimum, [(2, 1, 3), (4, 1)], variant="broadcast"),
    OpCase(
        "minimum",
        lambda a, b: nd.minimum(a, b) * nd.maximum(a, b),
        lambda a, b: a * b,
        [(4,), (4,)],
        variant="ties",
        domains=[_ties],
    ),
    # -- where --------------------------------------------------------------------------------------------------
    OpCase(
        "where",
        nd.where,
        np.where,
        [(3, 4), (3, 4), (3, 4)],
        ["bool", "real", "real"],
        bad=[
            BadInput(
                "shape mismatch",
                lambda: nd.where(nd.vector("c", dtype="bool", shape=(3,)), nd.vector("a"), nd.vector("b", shape=(4,))),
                nd.errors.ShapeError,
                "cannot be broadcast",
            ),
            BadInput(
                "one branch",
                lambda: nd.where(_vector("bool"), _vector("float64")),
                nd.errors.ShapeError,
                "either both or neither",
            ),
            BadInput("condition only", lambda: nd.where(_vector("bool")), nd.errors.ShapeError, "depends on the data"),
        ],
    ),
    OpCase("where", nd.where, np.where, [(3, 1), (4,), ()], ["bool", "real", "real"], variant="broadcast"),
    OpCase(  # a non-bool condition counts as true where nonzero, as in NumPy
        "where", nd.where, np.where, [(4,), (2, 1), (4,)], [int_domain(-1, 2), "real", "real"], variant="int-condition"
    ),
    OpCase(
        "where",
        lambda a: nd.where(a > 0, a, 0),
        lambda a: np.where(a > 0, a, 0),
        [(6,)],
        ["away"],
        variant="python-int-branch",
    ),
    OpCase(
        "where",
        lambda c, a: nd.where(c, 1.5, a),
        lambda c, a: np.where(c, 1.5, a),
        [(5,), (5,)],
        ["bool", "real"],
        variant="python-float-branch",
    ),
    # -- clip ---------------------------------------------------------------------------------------------------
    OpCase(
        "clip",
        lambda a: nd.clip(a, -0.5, 0.5),
        lambda a: np.clip(a, -0.5, 0.5),
        [(3, 4)],
        [_away_from_half],
        bad=[
            BadInput(
                "bound shape mismatch",
                lambda: nd.clip(nd.vector("x", shape=(3,)), nd.vector("lo", shape=(2,)), 1.0),
                nd.errors.ShapeError,
                "cannot be broadcast",
            ),
            BadInput(
                "bound not numeric",
                lambda: nd.clip(_vector("float64"), "low", 1.0),
                nd.errors.DTypeError,
                "cannot use a value",
            ),
        ],
    ),
    OpCase(
        "clip", nd.clip, np.clip, [(3, 4), (4,), (3, 1)], ["real", _low_bound, _high_bound], variant="variable-bounds"
    ),
    OpCase("clip", nd.clip, np.clip, [(5,), (5,), (1,)], ["real", _high_bound, _low_bound], variant="low-above-high"),
    OpCase(
        "clip",
        lambda a: nd.clip(a, None, 0.5),
        lambda a: np.clip(a, None, 0.5),
        [(3, 4)],
        [_away_from_half],
        variant="no-low",
    ),
    OpCase(
        "clip",
        lambda a: nd.clip(a, -0.5, None),
        lambda a: np.clip(a, -0.5, None),
        [(3, 4)],
        [_away_from_half],
        variant="no-high",
    ),
    OpCase("clip", lambda a: nd.clip(a, None, None), lambda a: np.clip(a, None, None), [(4,)], variant="no-bounds"),
    OpCase(
        "clip",
        lambda a: nd.clip(a, -1000, 3),
        lambda a: np.clip(a, -1000, 3),
        [(6,)],
        [_int8],
        dtypes=_FLOAT_ONLY,
        grad=False,
        variant="int8-wide-python-bounds",
    ),
    # -- comparisons (boolean results, no gradient) ---------------------------------------------------------------
    *[
        OpCase(name, getattr(nd, name), getattr(np, name), [(3, 4), (3, 4)], [_ties], grad=False)
        for name in ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal")
    ],
    OpCase("less", lambda a, b: a < b, np.less, [(3, 1), (4,)], [_ties], grad=False, variant="operator-broadcast"),
    OpCase("less_equal", lambda a: a <= 1, lambda a: a <= 1, [(5,)], [_ties], grad=False, variant="operator"),
    OpCase("greater", lambda a: 0 > a, lambda a: 0 > a, [(5,)], [_ties], grad=False, variant="reflected"),
    OpCase(
        "greater_equal",
        lambda a, b: a >= b,
        np.greater_equal,
        [(2, 3), ()],
        [_ties],
        grad=False,
        variant="operator-scalar",
    ),
    OpCase("equal", lambda a, b: a == b, np.equal, [(4,), (4,)], [_ties], grad=False, variant="operator"),
    OpCase(
        "not_equal",
        lambda a: a != 0,
        lambda a: a != 0,
        [(4,)],
        [int_domain(-1, 2)],
        dtypes=_FLOAT_ONLY,
        grad=False,
        variant="int-operator",
    ),
    OpCase(
        "less",
        lambda a: nd.less(a, 0.0),
        lambda a: np.less(a, 0.0),
        [(5,)],
        grad=False,
        variant="python-float",
        bad=[
            BadInput(
                "shape mismatch",
                lambda: nd.vector("a", shape=(2,)) < nd.vector("b", shape=(3,)),
                nd.errors.ShapeError,
                "cannot be broadcast",
            )
        ],
    ),
    OpCase(
        "where",
        lambda a: nd.sum(nd.where(a > 0, a, 0.0) * a),
        lambda a: np.sum(np.where(a > 0, a, 0.0) * a),
        [(3, 4)],
        ["away"],
        variant="in-a-cost",
    ),
]


# ---------------------------------------------------------------------------------------------------------------
# FusedElemwise: built by the fusion pass from an expression, then tested like any other op (value, types,
# float32, gradients through its inlined program, errors naming the member inside the kernel)
# ---------------------------------------------------------------------------------------------------------------
def _fused(build):
    """``build``'s output rebuilt by the fusion pass alone: the output of a ``FusedElemwise`` node."""

    def fused(*variables):
        from nbdiff.graph.fgraph import Graph
        from nbdiff.rewrite.fusion import fuse

        (out,) = fuse(Graph(list(variables), [build(*variables)])).graph.outputs
        assert type(out.owner.op).__name__ == "FusedElemwise", "the row's expression did not fuse"
        return out

    return fused


_MISMATCH = (np.zeros(3), np.zeros(4))

CASES += [
    OpCase(
        "fused",
        _fused(lambda a: nd.tanh(a) * nd.exp(-a) + a),
        lambda a: np.tanh(a) * np.exp(-a) + a,
        [(3, 4)],
        variant="chain",
        bad=[
            BadInput(
                "run-time broadcast mismatch inside the kernel",
                lambda: call_on_unknown_shapes(_fused(lambda a, b: nd.tanh(nd.exp(a) * nd.sin(b))), *_MISMATCH),
                nd.errors.ShapeError,
                "mul: failed at run time inside fused kernel",
            )
        ],
    ),
    OpCase(
        "fused",
        _fused(lambda a, b: nd.sin(a) * b - b),
        lambda a, b: np.sin(a) * b - b,
        [(3, 4), (4,)],
        variant="broadcast",
        static_shapes=True,
    ),
    OpCase(
        "fused",
        _fused(lambda a: nd.sum(nd.cos(a) * a, axis=1, keepdims=True)),
        lambda a: np.sum(np.cos(a) * a, axis=1, keepdims=True),
        [(3, 4)],
        variant="sum-keepdims",
    ),
]


# Derivatives' seeds: a tangent or eval point of unknown shape is checked against its variable's shape at run time
# (``assert_shape_like``), which also tells the rewrites that both have one shape.
def _rop_tanh_times(a, t):
    return nd.Rop(nd.tanh(a) * a, a, t)


def _lop_sin_twice(a, u):
    return nd.Lop(nd.sin(a) * 2.0, a, u)


CASES += [
    OpCase(
        "Rop",
        _rop_tanh_times,
        lambda a, t: ((1 - np.tanh(a) ** 2) * a + np.tanh(a)) * t,
        [(3, 4), (3, 4)],
        variant="tangent-shape",
        bad=[
            BadInput(
                "tangent of another shape, found at run time",
                lambda: call_on_unknown_shapes(lambda a, t: nd.Rop(nd.tanh(a) * a, a, t), *_MISMATCH),
                nd.errors.ShapeError,
                "Rop: the tangent for in0 has shape (4,), but must have shape (3,)",
            ),
            BadInput(
                "tangent of another static shape",
                lambda: nd.Rop(nd.exp(a := nd.vector("a", shape=(3,))), a, nd.vector("t", shape=(4,))),
                nd.errors.GradientError,
                "does not match",
            ),
        ],
    ),
    OpCase(
        "Lop",
        _lop_sin_twice,
        lambda a, u: np.cos(a) * 2.0 * u,
        [(3, 4), (3, 4)],
        variant="eval-point-shape",
        bad=[
            BadInput(
                "eval point of another shape, found at run time",
                lambda: call_on_unknown_shapes(lambda a, u: nd.Lop(nd.sin(a) * 2.0, a, u), *_MISMATCH),
                nd.errors.ShapeError,
                "Lop: the eval point for",
            ),
        ],
    ),
]
