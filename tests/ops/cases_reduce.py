"""Op-table rows for the reduce family (sum, mean, prod, max, min) and the softmax family (nnet.py)."""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from tests.ops.table import BadInput, OpCase, int_domain

AxisError = nd.errors.AxisError
ShapeError = nd.errors.ShapeError
GraphError = nd.errors.GraphError


def _zeros_per_row(rng, shape):
    """Nonzero values except row ``r`` holds ``r`` exact zeros (0, 1, 2, 3 ...): every zero-count case of prod."""
    values = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
    for row in range(shape[0]):
        values[row, rng.permutation(shape[1])[:row]] = 0.0
    return values


def _one_zero(rng, shape):
    """Nonzero values with a single exact zero somewhere."""
    values = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
    values.flat[rng.integers(values.size)] = 0.0
    return values


def np_prod_others(a, axis):
    """NumPy reference for d prod / d a along ``axis``: each element's slice product with that element left out."""
    moved = np.moveaxis(a, axis, -1)
    columns = [np.prod(np.delete(moved, j, axis=-1), axis=-1) for j in range(moved.shape[-1])]
    return np.moveaxis(np.stack(columns, axis=-1), -1, axis)


def _prod_grad(a):
    """The gradient graph of a row-wise prod (its own derivative exercises the Hessian-vector op)."""
    return nd.grad(nd.sum(nd.prod(a, axis=1)), a)


def np_logsumexp(a, axis=None, keepdims=False):
    """NumPy reference: the max-shifted log-sum-exp."""
    top = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - top), axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis=axis)


def np_softmax(a, axis=-1):
    """NumPy reference softmax."""
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def np_log_softmax(a, axis=-1):
    """NumPy reference log-softmax."""
    shifted = a - np.max(a, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _float(a):
    """The float dtype NumPy-style functions compute integer inputs in."""
    return a if a.dtype.kind == "f" else a.astype("float64")


def _variants(name, fn, reference, domain="real", extra=None):
    """The axis variants of a reduction row: None, int, negative int, tuple, keepdims."""
    kwargs = extra or {}
    return [
        OpCase(name, lambda a: fn(a), lambda a: reference(a), [(3, 4)], [domain], variant="axis=None", **kwargs),
        OpCase(
            name,
            lambda a: fn(a, axis=1),
            lambda a: reference(a, axis=1),
            [(3, 4)],
            [domain],
            variant="axis=1",
            **kwargs,
        ),
        OpCase(
            name,
            lambda a: fn(a, axis=-3),
            lambda a: reference(a, axis=-3),
            [(2, 3, 4)],
            [domain],
            variant="axis=-3",
            **kwargs,
        ),
        OpCase(
            name,
            lambda a: fn(a, axis=(0, 2)),
            lambda a: reference(a, axis=(0, 2)),
            [(2, 3, 4)],
            [domain],
            variant="axis=(0,2)",
            **kwargs,
        ),
        OpCase(
            name,
            lambda a: fn(a, axis=(-1,), keepdims=True),
            lambda a: reference(a, axis=(-1,), keepdims=True),
            [(2, 3, 4)],
            [domain],
            variant="keepdims",
            **kwargs,
        ),
        OpCase(
            name,
            lambda a: fn(a, keepdims=True),
            lambda a: reference(a, keepdims=True),
            [(3, 4)],
            [domain],
            variant="axis=None-keepdims",
            **kwargs,
        ),
        OpCase(name, lambda a: fn(a), lambda a: reference(a), [()], [domain], variant="0-d", **kwargs),
    ]


REDUCE_CASES = [
    *_variants("sum", nd.sum, np.sum),
    OpCase(
        "sum",
        lambda a: a.sum(axis=0),
        lambda a: a.sum(axis=0),
        [(3, 4)],
        ["bool"],
        grad=False,
        variant="bool-to-int64",
        bad=[
            BadInput("axis out of bounds", lambda: nd.sum(nd.matrix("a"), axis=2), AxisError, "out of bounds"),
            BadInput("repeated axis", lambda: nd.sum(nd.matrix("a"), axis=(0, -2)), AxisError, "repeated"),
            BadInput("keepdims not a bool", lambda: nd.sum(nd.matrix("a"), keepdims=1), GraphError, "keepdims"),
        ],
    ),
    *_variants("mean", nd.mean, np.mean),
    OpCase(
        "mean",
        lambda a: a.mean(axis=1),
        lambda a: a.mean(axis=1),
        [(3, 4)],
        [int_domain(-5, 5)],
        grad=False,
        variant="int-to-float64",
        bad=[
            BadInput("axis not an int", lambda: nd.mean(nd.matrix("a"), axis=1.0), AxisError, "must be an int"),
            BadInput("axis out of bounds", lambda: nd.mean(nd.matrix("a"), axis=(0, -3)), AxisError, "out of bounds"),
            BadInput("keepdims not a bool", lambda: nd.mean(nd.matrix("a"), keepdims="yes"), GraphError, "keepdims"),
        ],
    ),
    OpCase(
        "mean",
        lambda a: nd.mean(a, axis=0),
        lambda a: np.mean(a, axis=0),
        [(3, 4)],
        static_shapes=True,
        variant="static-count",
    ),
    *_variants("prod", nd.prod, np.prod),
    OpCase(
        "prod",
        lambda a: nd.prod(a, axis=1),
        lambda a: np.prod(a, axis=1),
        [(4, 5)],
        [_zeros_per_row],
        variant="zeros-0-1-2-3",
    ),
    OpCase("prod", lambda a: a.prod(), lambda a: a.prod(), [(3, 4)], [_one_zero], variant="one-zero"),
    OpCase(
        "prod",
        lambda a: nd.prod(a, axis=(0, 2)),
        lambda a: np.prod(a, axis=(0, 2)),
        [(2, 2, 3)],
        [_one_zero],
        variant="one-zero-tuple-axis",
    ),
    OpCase("prod", _prod_grad, lambda a: np_prod_others(a, 1), [(3, 4)], ["nonzero"], variant="gradient-graph"),
    OpCase(
        "prod",
        _prod_grad,
        lambda a: np_prod_others(a, 1),
        [(4, 5)],
        [_zeros_per_row],
        order=1,
        variant="gradient-graph-zeros",
    ),
    OpCase(
        "prod",
        lambda a: nd.prod(a, axis=0),
        lambda a: np.prod(a, axis=0),
        [(3, 4)],
        [int_domain(-3, 4)],
        grad=False,
        variant="int",
        bad=[
            BadInput("axis out of bounds", lambda: nd.prod(nd.vector("a"), axis=-2), AxisError, "out of bounds"),
            BadInput("repeated axis", lambda: nd.prod(nd.matrix("a"), axis=[1, 1]), AxisError, "repeated"),
        ],
    ),
    *_variants("max", nd.max, np.max, "distinct"),
    OpCase(
        "max",
        lambda a: a.max(axis=1),
        lambda a: a.max(axis=1),
        [(3, 4)],
        [int_domain(-9, 9)],
        grad=False,
        variant="int",
        bad=[
            BadInput("axis out of bounds", lambda: nd.max(nd.matrix("a"), axis=5), AxisError, "out of bounds"),
            BadInput("repeated axis", lambda: nd.max(nd.matrix("a"), axis=(1, -1)), AxisError, "repeated"),
            BadInput("static empty axis", lambda: nd.max(nd.matrix("a", shape=(3, 0)), axis=1), ShapeError, "length 0"),
            BadInput(
                "run-time empty axis",
                lambda: nd.function([a := nd.matrix("a")], nd.max(a, axis=1))(np.zeros((2, 0))),
                ShapeError,
                "length 0",
            ),
        ],
    ),
    OpCase("amax", lambda a: nd.amax(a, axis=0), lambda a: np.amax(a, axis=0), [(3, 4)], ["distinct"]),
    *_variants("min", nd.min, np.min, "distinct"),
    OpCase(
        "min",
        lambda a: a.min(),
        lambda a: a.min(),
        [(3, 4)],
        ["bool"],
        grad=False,
        variant="bool",
        bad=[
            BadInput("repeated axis", lambda: nd.min(nd.matrix("a"), axis=(0, 0)), AxisError, "repeated"),
            BadInput("empty input", lambda: nd.min(nd.vector("a", shape=(0,))), ShapeError, "length 0"),
        ],
    ),
    OpCase(
        "amin",
        lambda a: nd.amin(a, axis=-1, keepdims=True),
        lambda a: np.amin(a, axis=-1, keepdims=True),
        [(3, 4)],
        ["distinct"],
    ),
]

SOFTMAX_CASES = [
    *_variants("logsumexp", nd.logsumexp, np_logsumexp),
    OpCase(
        "logsumexp",
        lambda a: nd.logsumexp(a, axis=0),
        lambda a: np_logsumexp(_float(a), axis=0),
        [(3, 4)],
        [int_domain(-5, 5)],
        grad=False,
        variant="int",
        bad=[
            BadInput("axis out of bounds", lambda: nd.logsumexp(nd.matrix("a"), axis=-3), AxisError, "out of bounds"),
            BadInput(
                "keepdims not a bool", lambda: nd.logsumexp(nd.matrix("a"), keepdims=None), GraphError, "keepdims"
            ),
        ],
    ),
    OpCase("softmax", nd.softmax, np_softmax, [(3, 4)]),
    OpCase("softmax", lambda a: nd.softmax(a, axis=0), lambda a: np_softmax(a, axis=0), [(3, 4)], variant="axis=0"),
    OpCase(
        "softmax",
        lambda a: nd.softmax(a, axis=(0, -1)),
        lambda a: np_softmax(a, axis=(0, -1)),
        [(2, 3, 4)],
        variant="axis=(0,-1)",
    ),
    OpCase(
        "softmax", lambda a: nd.softmax(a, axis=None), lambda a: np_softmax(a, axis=None), [(2, 3)], variant="axis=None"
    ),
    OpCase(
        "softmax",
        nd.softmax,
        lambda a: np_softmax(_float(a)),
        [(3, 4)],
        [int_domain(-5, 5)],
        grad=False,
        variant="int",
        bad=[
            BadInput("axis out of bounds", lambda: nd.softmax(nd.vector("a"), axis=1), AxisError, "out of bounds"),
            BadInput("0-d input", lambda: nd.softmax(nd.scalar("a")), AxisError, "out of bounds"),
        ],
    ),
    OpCase("log_softmax", nd.log_softmax, np_log_softmax, [(3, 4)]),
    OpCase(
        "log_softmax",
        lambda a: nd.log_softmax(a, axis=-2),
        lambda a: np_log_softmax(a, axis=-2),
        [(3, 4)],
        variant="axis=-2",
    ),
    OpCase(  # the stability pass makes log_softmax_take (and its gradient log_softmax_take_grad) of this
        "log_softmax",
        lambda a, i: nd.take_along_axis(nd.log_softmax(a, axis=1), i, 1),
        lambda a, i: np.take_along_axis(np_log_softmax(a, axis=1), i, 1),
        [(4, 5), (4, 1)],
        ["real", int_domain(-5, 5)],
        variant="cross-entropy",
        static_shapes=True,
    ),
    OpCase(
        "log_softmax",
        lambda a, i: nd.take_along_axis(nd.log_softmax(a, axis=0), i, 0),
        lambda a, i: np.take_along_axis(np_log_softmax(a, axis=0), i, 0),
        [(3, 2, 4), (1, 2, 4)],
        ["real", int_domain(0, 3)],
        variant="cross-entropy axis=0",
        static_shapes=True,
    ),
    OpCase(
        "log_softmax",
        lambda a: nd.log_softmax(a, axis=(1, 2)),
        lambda a: np_log_softmax(a, axis=(1, 2)),
        [(2, 3, 4)],
        variant="axis=(1,2)",
        bad=[
            BadInput("repeated axis", lambda: nd.log_softmax(nd.matrix("a"), axis=(0, -2)), AxisError, "repeated"),
            BadInput(
                "axis not an int", lambda: nd.log_softmax(nd.matrix("a"), axis="last"), AxisError, "must be an int"
            ),
        ],
    ),
]

CASES: list = [*REDUCE_CASES, *SOFTMAX_CASES]
