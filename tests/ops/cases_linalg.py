"""Op-table rows for the linalg family: matmul (and ``@``), dot, outer."""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from nbdiff.errors import DTypeError, ShapeError
from tests.ops.table import BadInput, OpCase, call_on_unknown_shapes

_LEFT = np.linspace(-1.0, 1.0, 6).reshape(2, 3)  # a NumPy array on the left of ``@``
_INT_RIGHT = np.arange(12, dtype="int64").reshape(4, 3) - 5  # an integer operand (no gradient of its own)


_MATMUL_BAD = [
    BadInput(
        "inner dimensions differ",
        lambda: nd.matrix("a", shape=(3, 4)) @ nd.matrix("b", shape=(5, 2)),
        ShapeError,
        "(3, 4) and (5, 2) are not aligned",
    ),
    BadInput(
        "matrix @ vector, inner dimensions differ",
        lambda: nd.matmul(nd.matrix("a", shape=(3, 4)), nd.vector("v", shape=(3,))),
        ShapeError,
        "not aligned",
    ),
    BadInput(
        "vector @ vector, lengths differ",
        lambda: nd.vector("u", shape=(3,)) @ nd.vector("v", shape=(4,)),
        ShapeError,
        "not aligned",
    ),
    BadInput("0-d operand (NumPy raises too)", lambda: nd.scalar("s") @ nd.vector("v"), ShapeError, "0-d"),
    BadInput("Python number operand", lambda: nd.matmul(nd.matrix("a"), 2.0), ShapeError, "0-d"),
    BadInput(
        "batch dimensions do not broadcast",
        lambda: nd.tensor("a", shape=(2, 3, 4)) @ nd.tensor("b", shape=(3, 4, 5)),
        ShapeError,
        "batch dimensions",
    ),
    BadInput(
        "inner dimensions differ at run time",
        lambda: call_on_unknown_shapes(nd.matmul, np.ones((2, 3)), np.ones((4, 2))),
        ShapeError,
        "matmul: failed at run time",
    ),
    BadInput(
        "run-time mismatch names the shapes",
        lambda: call_on_unknown_shapes(nd.matmul, np.ones((2, 3)), np.ones((4,))),
        ShapeError,
        "float64[2, 3], float64[4]",
    ),
]

_DOT_BAD = [
    BadInput(
        "inner dimensions differ",
        lambda: nd.dot(nd.matrix("a", shape=(2, 3)), nd.vector("v", shape=(4,))),
        ShapeError,
        "dot: shapes (2, 3) and (4,) are not aligned",
    ),
    BadInput("N-D with a matrix", lambda: nd.dot(nd.tensor("a", ndim=3), nd.matrix("b")), ShapeError, "not supported"),
    BadInput(
        "run-time mismatch",
        lambda: call_on_unknown_shapes(nd.dot, np.ones((2, 3)), np.ones((2, 3))),
        ShapeError,
        "failed at run time",
    ),
]

CASES = [
    # -- matmul ------------------------------------------------------------------------------------------------
    OpCase("matmul", nd.matmul, np.matmul, [(3, 4), (4, 5)], variant="matrix-matrix", bad=_MATMUL_BAD),
    OpCase("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4,)], variant="matrix-vector"),
    OpCase("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4, 5)], variant="vector-matrix"),
    OpCase("matmul", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)], variant="vector-vector"),
    OpCase("matmul", nd.matmul, np.matmul, [(2, 1, 3, 4), (5, 4, 2)], variant="batched-broadcast"),
    OpCase("matmul", nd.matmul, np.matmul, [(1, 3, 4), (2, 4, 5)], variant="batched-size-1"),
    OpCase("matmul", nd.matmul, np.matmul, [(2, 3, 4), (4, 5)], variant="batched-matrix"),
    OpCase("matmul", nd.matmul, np.matmul, [(2, 3, 4), (4,)], variant="batched-vector"),
    OpCase("matmul", nd.matmul, np.matmul, [(4,), (2, 4, 5)], variant="vector-batched"),
    OpCase("matmul", nd.matmul, np.matmul, [(3, 4), (4, 5)], dtypes=("float32",), rtol32=1e-5, variant="float32"),
    OpCase(
        "matmul",
        lambda a, b: a.astype("float32") @ b,
        lambda a, b: a.astype("float32") @ b,
        [(3, 4), (4, 2)],
        dtypes=("float64",),
        grad=False,
        variant="float32-at-float64",
    ),
    OpCase("matmul", lambda a: _LEFT @ a, lambda a: _LEFT @ a, [(3, 2)], variant="ndarray-left"),
    OpCase("matmul", lambda a: a @ _INT_RIGHT, lambda a: a @ _INT_RIGHT, [(2, 4)], variant="integer-operand"),
    # -- dot -----------------------------------------------------------------------------------------------------
    OpCase("dot", nd.dot, np.dot, [(3, 4), (4, 2)], variant="matrix-matrix", bad=_DOT_BAD),
    OpCase("dot", nd.dot, np.dot, [(3, 4), (4,)], variant="matrix-vector"),
    OpCase("dot", nd.dot, np.dot, [(4,), (4, 3)], variant="vector-matrix"),
    OpCase("dot", nd.dot, np.dot, [(5,), (5,)], variant="vector-vector"),
    OpCase("dot", nd.dot, np.dot, [(), (3, 2)], variant="scalar-matrix"),
    OpCase("dot", nd.dot, np.dot, [(3,), ()], variant="vector-scalar"),
    OpCase("dot", nd.dot, np.dot, [(2, 3, 4), (4,)], variant="3d-vector"),
    OpCase("dot", nd.dot, np.dot, [(4,), (2, 4, 3)], variant="vector-3d"),
    OpCase("dot", lambda a, b: a.dot(b), lambda a, b: a.dot(b), [(2, 3), (3, 2)], variant="method"),
    OpCase("dot", lambda a: nd.dot(a, 2.5), lambda a: np.dot(a, 2.5), [(2, 3)], variant="python-float"),
    # -- outer ---------------------------------------------------------------------------------------------------
    OpCase(
        "outer",
        nd.outer,
        np.outer,
        [(3,), (4,)],
        bad=[
            BadInput(
                "non-numeric operand",
                lambda: nd.outer(nd.vector("v"), ["a", "b"]),
                DTypeError,
                "cannot use a value of dtype",
            )
        ],
    ),
    OpCase("outer", nd.outer, np.outer, [(), (4,)], variant="scalar-vector"),
    OpCase("outer", nd.outer, np.outer, [(3,), ()], variant="vector-scalar"),
    OpCase("outer", nd.outer, np.outer, [(2, 3), (2, 1, 2)], variant="flattens"),
]
