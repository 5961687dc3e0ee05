"""Op-table rows for the shape family (reshape, transpose, expand_dims, squeeze, broadcast_to, concatenate, stack,
diag, arange) and for the fills shaped like a variable (zeros_like, ones_like, full_like)."""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from nbdiff.errors import AxisError, DTypeError, GraphError, ShapeError
from nbdiff.ops.sizes import ShapeAt
from tests.ops.table import BadInput, OpCase, call_on_unknown_shapes, int_domain

RESHAPE = [
    OpCase(
        "reshape",
        lambda a: nd.reshape(a, (4, 3)),
        lambda a: a.reshape(4, 3),
        [(3, 4)],
        bad=[
            BadInput("size mismatch", lambda: nd.reshape(nd.matrix("a", shape=(3, 4)), (5, 2)), ShapeError, "(5, 2)"),
            BadInput(
                "size mismatch with -1",
                lambda: nd.reshape(nd.matrix("a", shape=(3, 4)), (5, -1)),
                ShapeError,
                "12 elements",
            ),
            BadInput(
                "known part does not divide",
                lambda: nd.reshape(nd.matrix("a", shape=(None, 4)), (3, 5)),
                ShapeError,
                "(3, 5)",
            ),
            BadInput("two -1", lambda: nd.reshape(nd.vector("a"), (-1, -1)), ShapeError, "only one"),
            BadInput("float entry", lambda: nd.reshape(nd.vector("a"), (2.5,)), ShapeError, "ints"),
            BadInput("unknown entry", lambda: nd.reshape(nd.vector("a"), (None, 2)), ShapeError, "ints"),
            BadInput("negative entry", lambda: nd.reshape(nd.vector("a"), (-2, 3)), ShapeError, "ints"),
            BadInput("-1 next to 0", lambda: nd.reshape(nd.vector("a"), (0, -1)), ShapeError, "-1"),
            BadInput(
                "run-time mismatch",
                lambda: call_on_unknown_shapes(lambda a: nd.reshape(a, (-1, 2)), np.ones(3)),
                ShapeError,
                "cannot reshape an array of shape (3,) into shape (-1, 2)",
            ),
            BadInput(
                "run-time mismatch, static target",
                lambda: call_on_unknown_shapes(lambda a: nd.reshape(a, (2, 2)), np.ones(6)),
                ShapeError,
                "(2, 2)",
            ),
        ],
    ),
    OpCase("reshape", lambda a: nd.reshape(a, (2, -1)), lambda a: a.reshape(2, -1), [(3, 4)], variant="-1"),
    OpCase("reshape", lambda a: a.reshape(4, -1, 2), lambda a: a.reshape(4, -1, 2), [(2, 3, 4)], variant="method, 3-d"),
    OpCase("reshape", lambda a: a.reshape(-1), lambda a: a.reshape(-1), [(3, 2)], variant="flatten"),
    OpCase("reshape", lambda a: nd.reshape(a, ()), lambda a: a.reshape(()), [(1, 1)], variant="to-scalar"),
    OpCase(
        "reshape", lambda a: nd.reshape(a, (1, 1, 3)), lambda a: a.reshape(1, 1, 3), [(3,)], variant="add-unit-dims"
    ),
    OpCase(
        "reshape",
        lambda a: nd.reshape(nd.tanh(a), (-1, 2)) ** 2,
        lambda a: np.tanh(a).reshape(-1, 2) ** 2,
        [(6,)],
        variant="nonlinear-around",
    ),
    OpCase(
        "reshape",
        lambda a: nd.reshape(a, (2, 3)),
        lambda a: a.reshape(2, 3),
        [(6,)],
        dtypes=("float64",),
        domains=[int_domain(-3, 3)],
        grad=False,
        variant="int",
    ),
]

TRANSPOSE = [
    OpCase(
        "transpose",
        nd.transpose,
        np.transpose,
        [(3, 4)],
        bad=[
            BadInput("repeated axis", lambda: nd.transpose(nd.matrix("a"), (0, 0)), AxisError, "repeated"),
            BadInput("wrong length", lambda: nd.transpose(nd.matrix("a"), (0,)), AxisError, "(0,)"),
            BadInput("axis out of range", lambda: nd.transpose(nd.matrix("a"), (0, 2)), AxisError, "out of bounds"),
            BadInput("float axis", lambda: nd.transpose(nd.matrix("a"), (0, 1.0)), AxisError, "int"),
        ],
    ),
    OpCase(
        "transpose",
        lambda a: nd.transpose(a, (2, 0, 1)),
        lambda a: np.transpose(a, (2, 0, 1)),
        [(2, 3, 4)],
        variant="axes",
    ),
    OpCase(
        "transpose",
        lambda a: nd.transpose(a, (-1, 0, -2)),
        lambda a: np.transpose(a, (-1, 0, -2)),
        [(2, 3, 4)],
        variant="negative-axes",
    ),
    OpCase("transpose", lambda a: a.T, lambda a: a.T, [(2, 3, 4)], variant=".T"),
    OpCase("transpose", lambda a: a.transpose(1, 0, 2), lambda a: a.transpose(1, 0, 2), [(2, 3, 4)], variant="method"),
    OpCase("transpose", lambda a: a.T, lambda a: a.T, [(3,)], variant="vector"),
    OpCase("transpose", lambda a: nd.sin(a).T * a.T, lambda a: np.sin(a).T * a.T, [(3, 2)], variant="nonlinear"),
]

EXPAND_DIMS = [
    OpCase(
        "expand_dims",
        lambda a: nd.expand_dims(a, 0),
        lambda a: np.expand_dims(a, 0),
        [(3, 4)],
        bad=[
            BadInput("axis out of range", lambda: nd.expand_dims(nd.matrix("a"), 3), AxisError, "out of bounds"),
            BadInput("repeated axis", lambda: nd.expand_dims(nd.matrix("a"), (1, 1)), AxisError, "repeated"),
        ],
    ),
    OpCase(
        "expand_dims",
        lambda a: nd.expand_dims(a, -1),
        lambda a: np.expand_dims(a, -1),
        [(3, 4)],
        variant="negative-axis",
    ),
    OpCase(
        "expand_dims", lambda a: nd.expand_dims(a, (0, 2)), lambda a: np.expand_dims(a, (0, 2)), [(3,)], variant="tuple"
    ),
    OpCase("expand_dims", lambda a: nd.expand_dims(a, 0), lambda a: np.expand_dims(a, 0), [()], variant="scalar"),
]

SQUEEZE = [
    OpCase(
        "squeeze",
        lambda a: nd.squeeze(a, 1),
        lambda a: np.squeeze(a, 1),
        [(3, 1, 4)],
        bad=[
            BadInput("known length is not 1", lambda: nd.squeeze(nd.matrix("a", shape=(3, 4)), 0), ShapeError, "not 1"),
            BadInput("axis out of range", lambda: nd.squeeze(nd.matrix("a"), 2), AxisError, "out of bounds"),
            BadInput("scalar", lambda: nd.squeeze(nd.scalar("a"), 0), AxisError, "out of bounds"),
            BadInput(
                "run-time length is not 1",
                lambda: call_on_unknown_shapes(lambda a: nd.squeeze(a, 0), np.ones((2, 3))),
                ShapeError,
                "(2, 3)",
            ),
        ],
    ),
    OpCase("squeeze", lambda a: nd.squeeze(a, -1), lambda a: np.squeeze(a, -1), [(3, 1)], variant="negative-axis"),
    OpCase("squeeze", lambda a: nd.squeeze(a, (0, 2)), lambda a: np.squeeze(a, (0, 2)), [(1, 3, 1)], variant="tuple"),
    OpCase("squeeze", nd.squeeze, np.squeeze, [(1, 3, 1, 2)], static_shapes=True, variant="axis=None"),
    OpCase("squeeze", lambda a: nd.squeeze(a, (0, 1)), lambda a: np.squeeze(a, (0, 1)), [(1, 1)], variant="to-scalar"),
]

BROADCAST_TO = [
    OpCase(
        "broadcast_to",
        lambda a: nd.broadcast_to(a, (2, 3)),
        lambda a: np.broadcast_to(a, (2, 3)),
        [(3,)],
        bad=[
            BadInput(
                "incompatible", lambda: nd.broadcast_to(nd.vector("a", shape=(3,)), (4,)), ShapeError, "not 1 or 4"
            ),
            BadInput("shorter target", lambda: nd.broadcast_to(nd.matrix("a"), (3,)), ShapeError, "shorter"),
            BadInput("negative entry", lambda: nd.broadcast_to(nd.vector("a"), (-1,)), ShapeError, "ints"),
            BadInput("unknown entry", lambda: nd.broadcast_to(nd.vector("a"), (None,)), ShapeError, "ints"),
            BadInput(
                "run-time mismatch",
                lambda: call_on_unknown_shapes(lambda a: nd.broadcast_to(a, (2, 3)), np.ones(2)),
                ShapeError,
                "cannot broadcast an array of shape (2,) to shape (2, 3)",
            ),
        ],
    ),
    OpCase(
        "broadcast_to",
        lambda a: nd.broadcast_to(a, (2, 3, 4)),
        lambda a: np.broadcast_to(a, (2, 3, 4)),
        [(3, 1)],
        variant="inner-and-leading",
    ),
    OpCase(
        "broadcast_to",
        lambda a: nd.broadcast_to(a, (2, 2)),
        lambda a: np.broadcast_to(a, (2, 2)),
        [()],
        variant="scalar",
    ),
    OpCase(
        "broadcast_to", lambda a: nd.broadcast_to(a, 4), lambda a: np.broadcast_to(a, 4), [(1,)], variant="int-shape"
    ),
    OpCase(
        "broadcast_to",
        lambda a: nd.broadcast_to(a, (2, 3)) * a,
        lambda a: np.broadcast_to(a, (2, 3)) * a,
        [(2, 1)],
        variant="times-input",
    ),
]

CONCATENATE = [
    OpCase(
        "concatenate",
        lambda a, b: nd.concatenate([a, b]),
        lambda a, b: np.concatenate([a, b]),
        [(2, 3), (4, 3)],
        bad=[
            BadInput("empty list", lambda: nd.concatenate([]), ShapeError, "at least one"),
            BadInput("a variable, not a list", lambda: nd.concatenate(nd.matrix("a")), GraphError, "list"),
            BadInput(
                "shapes differ",
                lambda: nd.concatenate([nd.matrix("a", shape=(2, 3)), nd.matrix("b", shape=(2, 4))]),
                ShapeError,
                "dimension 1",
            ),
            BadInput(
                "dimensions differ",
                lambda: nd.concatenate([nd.matrix("a"), nd.vector("b")]),
                ShapeError,
                "same number of dimensions",
            ),
            BadInput(
                "scalars", lambda: nd.concatenate([nd.scalar("a"), nd.scalar("b")]), ShapeError, "zero-dimensional"
            ),
            BadInput(
                "axis out of range",
                lambda: nd.concatenate([nd.matrix("a"), nd.matrix("b")], axis=2),
                AxisError,
                "out of bounds",
            ),
            BadInput(
                "run-time mismatch",
                lambda: call_on_unknown_shapes(lambda a, b: nd.concatenate([a, b]), np.ones((2, 3)), np.ones((2, 4))),
                ShapeError,
                "array 1 has shape (2, 4)",
            ),
        ],
    ),
    OpCase(
        "concatenate",
        lambda a, b, c: nd.concatenate([a, b, c], axis=1),
        lambda a, b, c: np.concatenate([a, b, c], axis=1),
        [(2, 3), (2, 1), (2, 2)],
        variant="axis=1",
    ),
    OpCase(
        "concatenate",
        lambda a, b: nd.concatenate([a, b], axis=-2),
        lambda a, b: np.concatenate([a, b], axis=-2),
        [(2, 1, 3), (2, 2, 3)],
        variant="negative-axis",
    ),
    OpCase(
        "concatenate",
        lambda a, b: nd.concatenate((a, b), axis=None),
        lambda a, b: np.concatenate((a, b), axis=None),
        [(2, 2), (3,)],
        variant="axis=None",
    ),
    OpCase(
        "concatenate", lambda *xs: nd.concatenate(list(xs)), lambda *xs: np.concatenate(xs), [(2,)] * 12, variant="many"
    ),
    OpCase(
        "concatenate",
        lambda a, b: nd.concatenate([a, b]),
        lambda a, b: np.concatenate([a, b]),
        [(2,), (3,)],
        domains=["real", int_domain(-3, 3)],
        variant="float-and-int",
    ),
    OpCase(
        "concatenate",
        lambda a, b: nd.concatenate([a, a * b, b]),
        lambda a, b: np.concatenate([a, a * b, b]),
        [(3,), (3,)],
        variant="shared-inputs",
    ),
    OpCase(
        "concatenate",
        lambda a: nd.concatenate([a, nd.constant(np.ones((1, 2)))]),
        lambda a: np.concatenate([a, np.ones((1, 2))]),
        [(2, 2)],
        dtypes=("float64",),
        variant="with-constant",
    ),
]

STACK = [
    OpCase(
        "stack",
        lambda a, b: nd.stack([a, b]),
        lambda a, b: np.stack([a, b]),
        [(3,), (3,)],
        bad=[
            BadInput("empty list", lambda: nd.stack([]), ShapeError, "at least one"),
            BadInput(
                "shapes differ",
                lambda: nd.stack([nd.vector("a", shape=(3,)), nd.vector("b", shape=(4,))]),
                ShapeError,
                "(4,)",
            ),
            BadInput(
                "dimensions differ",
                lambda: nd.stack([nd.matrix("a"), nd.vector("b")]),
                ShapeError,
                "same number of dimensions",
            ),
            BadInput(
                "axis out of range",
                lambda: nd.stack([nd.vector("a"), nd.vector("b")], axis=2),
                AxisError,
                "out of bounds",
            ),
            BadInput("not a list", lambda: nd.stack(3.0), GraphError, "list"),
            BadInput(
                "run-time mismatch",
                lambda: call_on_unknown_shapes(lambda a, b: nd.stack([a, b]), np.ones(2), np.ones(3)),
                ShapeError,
                "array 1 has shape (3,)",
            ),
        ],
    ),
    OpCase(
        "stack",
        lambda a, b: nd.stack([a, b], axis=1),
        lambda a, b: np.stack([a, b], axis=1),
        [(2, 3), (2, 3)],
        variant="axis=1",
    ),
    OpCase(
        "stack",
        lambda a, b, c: nd.stack([a, b, c], axis=-1),
        lambda a, b, c: np.stack([a, b, c], axis=-1),
        [(2, 3)] * 3,
        variant="negative-axis",
    ),
    OpCase("stack", lambda *xs: nd.stack(list(xs)), lambda *xs: np.stack(xs), [()] * 40, variant="many-scalars"),
    OpCase(
        "stack",
        lambda a, b: nd.stack([a, b]),
        lambda a, b: np.stack([a, b]),
        [(2,), (2,)],
        domains=["real", int_domain(-3, 3)],
        variant="float-and-int",
    ),
    OpCase(
        "stack",
        lambda a: nd.stack([a, nd.sin(a), a]),
        lambda a: np.stack([a, np.sin(a), a]),
        [(3,)],
        variant="shared-input",
    ),
]

DIAG = [
    OpCase(
        "diag",
        nd.diag,
        np.diag,
        [(4,)],
        bad=[
            BadInput("3-d input", lambda: nd.diag(nd.tensor("a", ndim=3)), ShapeError, "1-d or 2-d"),
            BadInput("scalar input", lambda: nd.diag(nd.scalar("a")), ShapeError, "1-d or 2-d"),
            BadInput("float offset", lambda: nd.diag(nd.vector("a"), 1.5), ShapeError, "int"),
        ],
    ),
    OpCase("diag", lambda a: nd.diag(a, 1), lambda a: np.diag(a, 1), [(3,)], variant="vector, k=1"),
    OpCase("diag", lambda a: nd.diag(a, -2), lambda a: np.diag(a, -2), [(3,)], variant="vector, k=-2"),
    OpCase("diag", nd.diag, np.diag, [(3, 4)], variant="matrix"),
    OpCase("diag", lambda a: nd.diag(a, 1), lambda a: np.diag(a, 1), [(4, 3)], variant="matrix, k=1"),
    OpCase("diag", lambda a: nd.diag(a, -1), lambda a: np.diag(a, -1), [(3, 4)], variant="matrix, k=-1"),
    OpCase("diag", lambda a: nd.diag(nd.diag(a)), lambda a: np.diag(np.diag(a)), [(3, 3)], variant="round-trip"),
    OpCase("diag", lambda a: nd.diag(a * a), lambda a: np.diag(a * a), [(3,)], variant="nonlinear"),
]

ARANGE = [
    OpCase(
        "arange",
        lambda a: a * nd.arange(4),
        lambda a: a * np.arange(4),
        [(4,)],
        bad=[
            BadInput("non-scalar bound", lambda: nd.arange(nd.vector("n")), ShapeError, "scalars"),
            BadInput("zero step", lambda: nd.arange(0, 3, 0), ShapeError, "zero"),
            BadInput("string bound", lambda: nd.arange("3"), DTypeError, "numbers"),
            BadInput("unsupported dtype", lambda: nd.arange(3, dtype="complex64"), DTypeError, "complex64"),
        ],
    ),
    OpCase(
        "arange",
        lambda a: a + nd.arange(1.0, 3.0, 0.5),
        lambda a: a + np.arange(1.0, 3.0, 0.5),
        [(4,)],
        variant="float-step",
    ),
    OpCase(
        "arange",
        lambda a: a * nd.arange(3, dtype="float32"),
        lambda a: a * np.arange(3, dtype="float32"),
        [(2, 3)],
        variant="float32",
    ),
    OpCase(
        "arange", lambda a: a - nd.arange(5, 0, -2), lambda a: a - np.arange(5, 0, -2), [(3,)], variant="negative-step"
    ),
    OpCase(
        "arange",
        lambda a: a * nd.arange(0.5, 70000.5)[-3:],  # over ARANGE_CONSTANT_MAX values: computed at run time
        lambda a: a * np.arange(0.5, 70000.5)[-3:],
        [(3,)],
        variant="large",
    ),
]

FILLS = [
    OpCase("zeros_like", nd.zeros_like, np.zeros_like, [(3, 4)]),
    OpCase(
        "zeros_like",
        lambda a: nd.zeros_like(a, dtype="int64"),
        lambda a: np.zeros_like(a, dtype="int64"),
        [(3,)],
        grad=False,
        variant="int64",
    ),
    OpCase("ones_like", nd.ones_like, np.ones_like, [(2, 3)]),
    OpCase("ones_like", lambda a: a * nd.ones_like(a), lambda a: a * np.ones_like(a), [(3,)], variant="times-input"),
    OpCase("full_like", lambda a: nd.full_like(a, 2.5), lambda a: np.full_like(a, 2.5), [(2, 2)]),
    OpCase(
        "full_like",
        lambda a: nd.full_like(a, 3, dtype="int32"),
        lambda a: np.full_like(a, 3, dtype="int32"),
        [(2,)],
        grad=False,
        variant="int32",
    ),
    OpCase(
        "full_like",
        lambda a: nd.full_like(a, -1.5) * a,
        lambda a: np.full_like(a, -1.5) * a,
        [()],
        variant="scalar-times-input",
    ),
]


def _negative_size(build):
    """A bad input whose size is negative only when the function runs (the sum of its input)."""
    return lambda: call_on_unknown_shapes(lambda a: build(nd.sum(a).astype("int64")), np.array([-2.0]))


SIZE_ERRORS = [
    BadInput("float size", lambda: nd.zeros((2.5, 3)), ShapeError, "ints >= 0"),
    BadInput("negative static size", lambda: nd.zeros((-1, 3)), ShapeError, "ints >= 0"),
    BadInput("float size scalar", lambda: nd.zeros((nd.scalar("s"),)), ShapeError, "0-d integer variable"),
    BadInput("non-scalar size", lambda: nd.ones((nd.vector("s", dtype="int64"),)), ShapeError, "0-d integer"),
    BadInput("negative size at run time", _negative_size(lambda n: nd.zeros((n, 2))), ShapeError, "sizes must be >= 0"),
]

SIZES = [  # shapes as values: x.shape[i], nd.shape(x), and the ops taking size scalars
    OpCase(
        "shape",
        lambda a: nd.sum(a) / a.shape[0],
        lambda a: np.sum(a) / a.shape[0],
        [(4,)],
        variant="mean by hand",
        bad=[BadInput("axis out of range", lambda: ShapeAt(1)(nd.vector("v")), ShapeError, "out of bounds")],
    ),
    OpCase(
        "shape",
        lambda a: nd.broadcast_to(nd.sum(a, axis=0), nd.shape(a)),
        lambda a: np.broadcast_to(a.sum(axis=0), a.shape),
        [(2, 3)],
        variant="nd.shape",
        bad=[
            BadInput(
                "shape of unknown length", lambda: nd.zeros(nd.vector("s", dtype="int64")), ShapeError, "tuple of sizes"
            )
        ],
    ),
    OpCase(
        "zeros",
        lambda a: a + nd.zeros((a.shape[0], 2)),
        lambda a: a + np.zeros((a.shape[0], 2)),
        [(3, 1)],
        bad=SIZE_ERRORS,
    ),
    OpCase("ones", lambda a: a * nd.ones(a.shape), lambda a: a * np.ones(a.shape), [(2, 3)]),
    OpCase("full", lambda a: a - nd.full((a.shape[0],), 2.5), lambda a: a - np.full((a.shape[0],), 2.5), [(3,)]),
    OpCase(
        "full",
        lambda a: nd.full((2, a.shape[0]), nd.sum(a)),
        lambda a: np.full((2, a.shape[0]), np.sum(a)),
        [(3,)],
        variant="symbolic fill value",
        bad=[BadInput("vector fill value", lambda: nd.full((2,), nd.vector("v")), ShapeError, "scalar")],
    ),
    OpCase(
        "arange",
        lambda a: a * nd.arange(a.shape[0]),
        lambda a: a * np.arange(a.shape[0]),
        [(4,)],
        variant="size scalar",
        bad=[
            BadInput(
                "zero step at run time",
                _negative_size(lambda n: nd.arange(0, 3, n + 2)),
                ShapeError,
                "step must not be zero",
            )
        ],
    ),
    OpCase(
        "reshape",
        lambda a: nd.reshape(a, (a.shape[0], -1)),
        lambda a: a.reshape(a.shape[0], -1),
        [(2, 3, 4)],
        variant="size scalar",
        bad=[
            BadInput(
                "sizes that do not fit at run time",
                lambda: call_on_unknown_shapes(lambda a: nd.reshape(a, (a.shape[0], 5)), np.ones((2, 3))),
                ShapeError,
                "cannot reshape",
            ),
            BadInput("two -1", lambda: nd.reshape(nd.matrix("m"), (-1, -1)), ShapeError, "only one entry"),
        ],
    ),
    OpCase(
        "broadcast_to",
        lambda a: nd.broadcast_to(a, (3, a.shape[0])),
        lambda a: np.broadcast_to(a, (3, a.shape[0])),
        [(4,)],
        variant="size scalar",
        bad=[
            BadInput(
                "negative size at run time", _negative_size(lambda n: nd.broadcast_to(1.0, (n,))), ShapeError, ">= 0"
            )
        ],
    ),
]

CASES = [
    *RESHAPE,
    *TRANSPOSE,
    *EXPAND_DIMS,
    *SQUEEZE,
    *BROADCAST_TO,
    *CONCATENATE,
    *STACK,
    *DIAG,
    *ARANGE,
    *FILLS,
    *SIZES,
]
