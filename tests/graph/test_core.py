"""The core graph: hash-consing, constants by value, identity hashing, provenance and weak scalar typing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import DTypeError
from nbdiff.graph.basic import Constant, Variable

HERE = Path(__file__).name


def lineno() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


# -- hash-consing ----------------------------------------------------------------------------------------------------
def test_same_op_on_same_inputs_is_the_same_node():
    x, y = nd.vector("x"), nd.vector("y")
    assert nd.tanh(x) is nd.tanh(x)
    assert (x + y) is (x + y)
    assert (x + y).owner is (x + y).owner
    assert (x + y) is not (y + x)  # inputs are ordered
    assert nd.tanh(x) is not nd.tanh(y)
    assert nd.sum(x, axis=0) is nd.sum(x)  # equal parameters after normalisation are the same op
    assert nd.sum(x, keepdims=True) is not nd.sum(x)


def test_rebuilding_a_node_records_the_second_site():
    x = nd.vector("x")
    first = lineno() + 1
    a = nd.exp(x)
    second = lineno() + 1
    b = nd.exp(x)
    assert a is b
    lines = [origin.site.lineno for origin in a.provenance.origins]
    assert lines == [first, second]
    assert a.provenance.site.lineno == first  # the first site stays the primary one
    for _ in range(3):
        nd.exp(x)  # one more site, recorded once however often it runs
    assert len(a.provenance.origins) == 3


def test_provenance_site_is_the_users_line():
    line = lineno() + 1
    x = nd.vector("x")
    built = lineno() + 1
    y = nd.tanh(x) * 2.0
    assert x.provenance.site.label == f"{HERE}:{line}"
    assert y.provenance.site.label == f"{HERE}:{built}"
    assert y.provenance.site.function == "test_provenance_site_is_the_users_line"
    assert "y = nd.tanh(x) * 2.0" in y.provenance.describe()
    assert not y.provenance.is_gradient


def test_gradient_nodes_record_the_transform():
    x = nd.vector("x")
    forward = lineno() + 1
    y = nd.sum(nd.sin(x))
    grad_line = lineno() + 1
    g = nd.grad(y, x)
    assert g.provenance.site.lineno == grad_line
    assert g.provenance.is_gradient
    derivative = g.provenance.derivative
    assert (derivative.call, derivative.rule, derivative.op) == ("grad", "pullback", "sin")
    assert derivative.site.lineno == forward
    assert f"pullback of sin at {HERE}:{forward}" in g.provenance.describe()


# -- constants -------------------------------------------------------------------------------------------------------
def test_constants_are_hash_consed_by_value():
    assert nd.constant(2.0) is nd.constant(2.0)
    assert nd.constant([1.0, 2.0]) is nd.constant(np.array([1.0, 2.0]))
    assert nd.constant(2.0) is not nd.constant(2.0, "float32")  # the dtype is part of the value
    assert nd.constant([1.0, 2.0]) is not nd.constant([[1.0, 2.0]])  # and so is the shape
    x = nd.vector("x")
    assert (x * 2.0) is (x * 2.0)  # so expressions with equal constants merge too


def test_large_and_named_constants_are_not_merged():
    big = np.zeros(10_000)
    assert nd.constant(big) is not nd.constant(big)
    assert nd.constant(1.0, name="one") is not nd.constant(1.0, name="one")


def test_constants_are_read_only_copies():
    data = np.array([1.0, 2.0])
    c = nd.constant(data)
    data[0] = 5.0
    assert isinstance(c, Constant) and c.data[0] == 1.0
    with pytest.raises(ValueError):
        c.data[0] = 3.0


# -- identity hashing ------------------------------------------------------------------------------------------------
def test_variables_hash_by_identity():
    x, y = nd.vector("x"), nd.vector("x")
    table = {x: "first", y: "second"}
    assert table[x] == "first" and table[y] == "second"
    assert len({x, y, x}) == 2


def test_double_equals_builds_an_equal_node():
    x, y = nd.vector("x"), nd.vector("y")
    z = x == y
    assert isinstance(z, Variable) and z.owner.op.name == "equal" and z.dtype == "bool"
    f = nd.function([x, y], z)
    np.testing.assert_array_equal(f([1.0, 2.0], [1.0, 3.0]), [True, False])


# -- weak Python scalars (NEP 50) ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, scalar, expected",
    [
        ("float32", 2.0, "float32"),
        ("float32", 2, "float32"),
        ("float64", 2, "float64"),
        ("int64", 2.5, "float64"),
        ("int64", 2, "int64"),
        ("int32", 2, "int32"),
        ("int32", 2.5, "float64"),
    ],
)
def test_python_scalars_are_weakly_typed(dtype, scalar, expected):
    v = nd.vector("v", dtype=dtype)
    product = v * scalar
    assert product.dtype == expected
    assert (scalar * v).dtype == expected
    values = np.array([1, 2], dtype=dtype)
    result = nd.function([v], product)(values)
    assert result.dtype == np.dtype(expected) == (values * scalar).dtype  # what NumPy 2 gives


def test_numpy_scalars_are_strongly_typed():
    v = nd.vector("v", dtype="float32")
    assert (v * np.float64(2.0)).dtype == "float64"
    assert (v * np.float32(2.0)).dtype == "float32"


def test_python_integer_that_does_not_fit_is_an_error():
    v = nd.vector("v", dtype="int8")
    with pytest.raises(DTypeError, match="does not fit in int8"):
        v + 1000
