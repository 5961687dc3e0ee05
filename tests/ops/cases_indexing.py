"""Op-table rows for the indexing family: ``x[...]`` (``getitem``) and ``take_along_axis``.

Indexing has the same spelling on variables and arrays, so most rows use one function as builder and reference.
"""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from nbdiff.errors import AxisError, IndexingError, ShapeError
from tests.ops.table import BadInput, OpCase, int_domain

MASK = np.array([True, False, True, True])
MASK_2D = np.array([[True, False, True], [False, False, True], [True, True, False], [False, True, False]])


def _index(variant, fn, shapes, domains=("real",), **kwargs):
    """A getitem row whose builder and NumPy reference are the same indexing expression."""
    return OpCase("getitem", fn, fn, shapes, list(domains), variant=variant, **kwargs)


def _along(variant, axis, shapes, high, **kwargs):
    """A take_along_axis row with symbolic integer indices in ``[-high, high)``."""
    return OpCase(
        "take_along_axis",
        lambda a, i: nd.take_along_axis(a, i, axis),
        lambda a, i: np.take_along_axis(a, i, axis),
        shapes,
        ["real", int_domain(-high, high)],
        variant=variant,
        **kwargs,
    )


def _run_out_of_bounds():
    x, i = nd.vector("x"), nd.vector("i", dtype="int64")
    return nd.function([x, i], x[i])(np.zeros(3), np.array([0, 5]))


def _run_mask_mismatch():
    x, m = nd.vector("x"), nd.vector("m", dtype="bool")
    return nd.function([x, m], x[m])(np.zeros(3), np.array([True, False]))


def _run_along_out_of_bounds():
    a, i = nd.matrix("a"), nd.matrix("i", dtype="int64")
    return nd.function([a, i], nd.take_along_axis(a, i, 1))(np.zeros((2, 3)), np.array([[0], [3]]))


CASES = [
    _index(
        "int",
        lambda x: x[1],
        [(3, 4)],
        bad=[
            BadInput("too many indices", lambda: nd.matrix("x")[0, 0, 0], IndexingError, "too many indices"),
            BadInput("int out of bounds", lambda: nd.vector("x", shape=(3,))[3], IndexingError, "out of bounds"),
            BadInput("float index", lambda: nd.vector("x")[1.5], IndexingError, "float"),
            BadInput("float array index", lambda: nd.vector("x")[np.array([0.5, 1.0])], IndexingError, "float64"),
            BadInput(
                "float index variable", lambda: nd.vector("x")[nd.vector("i")], IndexingError, "integer or boolean"
            ),
            BadInput("two ellipses", lambda: nd.matrix("x")[..., 0, ...], IndexingError, "single ellipsis"),
            BadInput("string index", lambda: nd.vector("x")["a"], IndexingError, "str"),
            BadInput("run-time out of bounds", _run_out_of_bounds, ShapeError, "out of bounds"),
        ],
    ),
    _index(
        "negative-int",
        lambda x: x[-1, -3],
        [(3, 4)],
        bad=[
            BadInput(
                "negative int out of bounds",
                lambda: nd.matrix("x", shape=(2, 3))[:, -4],
                IndexingError,
                "index -4 is out of bounds for axis 1 with size 3",
            ),
        ],
    ),
    _index(
        "slice-steps",
        lambda x: x[1::2, 0:3:2],
        [(5, 4)],
        bad=[
            BadInput("zero step", lambda: nd.vector("x")[::0], IndexingError, "step cannot be zero"),
            BadInput(
                "symbolic slice bound",
                lambda: nd.vector("x")[: nd.scalar("n", dtype="int64")],
                IndexingError,
                "slice bounds",
            ),
        ],
    ),
    _index("negative-steps", lambda x: x[::-1, 3:0:-2], [(5, 4)]),
    _index("negative-steps-negative-bounds", lambda x: x[-1:-6:-3, :-3:-1], [(5, 4)]),
    _index("empty-slice", lambda x: x[3:1], [(5, 2)]),
    _index("newaxis", lambda x: x[None, :, None, 1], [(3, 4)]),
    _index("ellipsis", lambda x: x[..., 1], [(2, 3, 4)]),
    _index("ellipsis-middle", lambda x: x[0, ..., None, ::-1], [(2, 3, 4)]),
    _index("scalar-input", lambda x: x[None, ...], [()]),
    _index(
        "int-array-repeats",
        lambda x: x[[0, 2, 2, 0, 2]],
        [(3, 4)],
        bad=[
            BadInput(
                "constant array out of bounds",
                lambda: nd.vector("x", shape=(3,))[[0, 3]],
                IndexingError,
                "index 3 is out of bounds",
            ),
            BadInput(
                "arrays that do not broadcast",
                lambda: nd.matrix("x")[[0, 1], [0, 1, 2]],
                IndexingError,
                "could not be broadcast",
            ),
        ],
    ),
    _index("int-array-2d", lambda x: x[np.array([[1, 1], [0, -1]])], [(3, 4)]),
    _index("symbolic-int-vector", lambda x, i: x[i], [(5, 3), (7,)], ["real", int_domain(-5, 5)]),
    _index("symbolic-int-matrix", lambda x, i: x[1:, i], [(3, 4), (2, 3)], ["real", int_domain(0, 4)]),
    _index("symbolic-int-scalar", lambda x, i: x[i, ::-1], [(3, 4), ()], ["real", int_domain(-3, 3)]),
    _index(
        "bool-mask-constant",
        lambda x: x[MASK],
        [(4, 3)],
        bad=[
            BadInput(
                "mask shape mismatch",
                lambda: nd.matrix("x", shape=(2, 3))[np.ones((3, 2), bool)],
                IndexingError,
                "does not match",
            ),
            BadInput("run-time mask mismatch", _run_mask_mismatch, ShapeError, "boolean index"),
        ],
    ),
    _index("bool-mask-2d-constant", lambda x: x[MASK_2D], [(4, 3)]),
    _index("bool-mask-axis1", lambda x: x[:, MASK[:3]], [(2, 3)]),
    _index("symbolic-bool-mask", lambda x, m: (x[m] * x[m]).sum(), [(4, 3), (4, 3)], ["real", "bool"]),
    _index("symbolic-bool-mask-axis1", lambda x, m: x[:, m].sum(axis=1), [(4, 3), (3,)], ["real", "bool"]),
    _index("mask-and-int-array", lambda x: x[MASK, [2, 0, 2]], [(4, 3)]),
    _index("mixed-adjacent", lambda x: x[:, [0, 2, 2], [1, 0, 1]], [(2, 3, 4)]),
    _index("mixed-adjacent-int", lambda x: x[:, 1, [3, 0, 3]], [(2, 3, 4)]),
    _index("mixed-separated", lambda x: x[[0, 1, 1], :, [1, 3, 3]], [(2, 3, 4)]),
    _index("mixed-separated-int", lambda x: x[0, :, [1, 2, 1]], [(2, 3, 4)]),
    _index("mixed-separated-by-newaxis", lambda x: x[[1, 0], None, [2, 2]], [(2, 3, 4)]),
    _index("mixed-symbolic", lambda x, i: x[i, ::-1, None, i], [(3, 2, 3), (2, 2)], ["real", int_domain(0, 3)]),
    _index("nonlinear-repeats", lambda x: x[[0, 1, 1]] * x[[2, 2, 0]], [(3, 2)]),
    _along(
        "axis=1",
        1,
        [(3, 4), (3, 6)],
        4,
        bad=[
            BadInput(
                "ndim mismatch",
                lambda: nd.take_along_axis(nd.matrix("a"), nd.vector("i", dtype="int64"), 0),
                ShapeError,
                "same number of dimensions",
            ),
            BadInput(
                "float indices",
                lambda: nd.take_along_axis(nd.matrix("a"), nd.matrix("i"), 0),
                IndexingError,
                "integer array",
            ),
            BadInput(
                "axis out of bounds",
                lambda: nd.take_along_axis(nd.matrix("a"), nd.matrix("i", dtype="int64"), 2),
                AxisError,
                "out of bounds",
            ),
            BadInput(
                "2-d indices with axis=None",
                lambda: nd.take_along_axis(nd.matrix("a"), nd.matrix("i", dtype="int64"), None),
                ShapeError,
                "single dimension",
            ),
            BadInput(
                "shapes that do not broadcast",
                lambda: nd.take_along_axis(nd.matrix("a", shape=(2, 3)), np.zeros((3, 1), int), 1),
                IndexingError,
                "shape mismatch",
            ),
            BadInput(
                "constant index out of bounds",
                lambda: nd.take_along_axis(nd.matrix("a", shape=(2, 3)), np.array([[0], [3]]), 1),
                IndexingError,
                "out of bounds",
            ),
            BadInput("run-time out of bounds", _run_along_out_of_bounds, ShapeError, "out of bounds"),
        ],
    ),
    _along("axis=0-repeats", 0, [(2, 3), (5, 3)], 2),
    _along("default-axis", -1, [(2, 3, 2), (2, 3, 4)], 2),
    _along("broadcast", 0, [(3, 1), (2, 4)], 3),
    _along("axis=None", None, [(2, 3), (8,)], 6),
    OpCase(
        "take_along_axis",
        lambda a: nd.take_along_axis(a, np.array([[2, 2], [0, 2]]), 1) ** 2,
        lambda a: np.take_along_axis(a, np.array([[2, 2], [0, 2]]), 1) ** 2,
        [(2, 3)],
        variant="constant-indices-nonlinear",
    ),
]
