"""Op-table rows for loops: ``nd.scan`` (the ``Scan`` op), as a cumulative product and a running tanh recurrence."""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from nbdiff.errors import GraphError, ShapeError
from tests.ops.table import BadInput, OpCase, call_on_unknown_shapes


def _cumprod(x: nd.Variable) -> nd.Variable:
    """Running products of ``x``: the stacked per-step outputs of a scan."""
    return nd.scan(lambda c, xt: (c * xt, c * xt), nd.ones_like(x[0]), x)[1]


def _recurrence(a: nd.Variable, xs: nd.Variable) -> nd.Variable:
    """``h_t = tanh(a * h_{t-1} + x_t)`` from ``h = 0``: an invariant (``a``) read from the enclosing graph."""
    return nd.scan(lambda h, xt: (nd.tanh(a * h + xt),) * 2, nd.zeros_like(xs[0]), xs)[1]


def _recurrence_reference(a: np.ndarray, xs: np.ndarray) -> np.ndarray:
    h, rows = np.zeros_like(xs[0]), []
    for xt in xs:
        h = np.tanh(a * h + xt)
        rows.append(h)
    return np.stack(rows).astype(xs.dtype)


_BAD = [
    BadInput(
        "step returns two carries for one",
        lambda: nd.scan(lambda c, xt: ((c, c), c), nd.scalar("c"), nd.vector("x")),
        GraphError,
        "2 carries",
    ),
    BadInput(
        "sequences of different static lengths",
        lambda: nd.scan(
            lambda c, x: (c + x[0] * x[1], c), nd.scalar("c"), (nd.vector("u", shape=(3,)), nd.vector("v", shape=(4,)))
        ),
        ShapeError,
        "length 3",
    ),
    BadInput(
        "sequences of different lengths at run time",
        lambda: call_on_unknown_shapes(
            lambda u, v: nd.scan(lambda c, x: (c + x[0] * x[1], c), nd.zeros_like(u[0]), (u, v))[1],
            np.ones(3),
            np.ones(4),
        ),
        ShapeError,
        "sequence 1 has length 4",
    ),
]

CASES = [
    OpCase("scan", _cumprod, np.cumprod, [(6,)], variant="cumprod", bad=_BAD),
    OpCase("scan", _recurrence, _recurrence_reference, [(), (5, 3)], domains=("unit", "real"), variant="recurrence"),
]
