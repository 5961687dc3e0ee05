"""Op-table rows for elementwise ops (arithmetic, transcendental functions, comparisons, casts)."""

from __future__ import annotations

import numpy as np

import nbdiff as nd
from tests.ops.table import BadInput, OpCase


def _unary(name, reference, domain="real", **kwargs):
    return OpCase(name, getattr(nd, name), reference, [(3, 4)], [domain], **kwargs)


def _binary(name, reference, domains=("real",), **kwargs):
    return OpCase(name, getattr(nd, name), reference, [(3, 4), (3, 4)], list(domains), **kwargs)


CASES = [
    _binary(
        "add", np.add,
        bad=[
            BadInput("shape mismatch", lambda: nd.vector("a", shape=(3,)) + nd.vector("b", shape=(4,)),
                     nd.errors.ShapeError, "cannot be broadcast"),
            BadInput("call-time shape mismatch", lambda: nd.function(
                [a := nd.vector("a"), b := nd.vector("b")], a + b)([1.0, 2.0], [1.0, 2.0, 3.0]),
                nd.errors.ShapeError, "(2,)"),
        ],
    ),
    OpCase("add", nd.add, np.add, [(3, 1), (4,)], variant="broadcast"),
    OpCase("add", lambda a: a + 2, lambda a: a + 2, [(3,)], variant="python-int"),
    _binary("sub", np.subtract),
    OpCase("sub", lambda a, b: a - b, np.subtract, [(2, 3, 1), (1, 4)], variant="broadcast"),
    _binary("mul", np.multiply),
    OpCase("mul", lambda a, b: a * b, np.multiply, [(), (2, 3)], variant="scalar-broadcast"),
    _binary("true_divide", np.true_divide, ("real", "nonzero")),
    OpCase("true_divide", lambda a, b: a / b, np.true_divide, [(1, 3), (2, 1)], ["real", "nonzero"],
           variant="broadcast"),
    _binary("power", np.power, ("positive", "real")),
    OpCase("power", lambda a: a**2, lambda a: a**2, [(5,)], variant="square"),
    OpCase("power", lambda a: a**3.5, lambda a: a**3.5, [(5,)], ["positive"], variant="constant-exponent"),
    _unary("negative", np.negative),
    _unary("exp", np.exp),
    _unary("log", np.log, "positive"),
    _unary("tanh", np.tanh),
    _unary("sin", np.sin),
    _unary("cos", np.cos),
    OpCase("astype", lambda a: a.astype("float32"), lambda a: a.astype("float32"), [(4,)], dtypes=("float64",),
           variant="float64-to-float32", grad=False),  # finite differences cannot see through rounding
    OpCase("astype", lambda a: a.astype("float64"), lambda a: a.astype("float64"), [(4,)], variant="to-float64"),
    OpCase("astype", lambda a: a.astype("int64"), lambda a: a.astype("int64"), [(4,)], grad=False, variant="to-int"),
]
