"""Every user mistake raises a typed nbdiff error naming the op or argument, the shapes/dtypes and the user's line.

Each test records the line it expects the message to point at (``line = lineno() + 1`` just above the statement),
so a message that names the wrong line fails as surely as one that names none.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import (
    AxisError,
    DTypeError,
    GradientError,
    GraphError,
    InputError,
    MissingInputError,
    NbdiffError,
    ShapeError,
    UndefinedGradientError,
)

HERE = Path(__file__).name


def lineno() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def at(line: int) -> str:
    return f"{HERE}:{line}"


def message_of(excinfo: pytest.ExceptionInfo) -> str:
    """The error's message, after checking it is one of nbdiff's own errors (never a bare assert or NumPy's)."""
    error = excinfo.value
    assert isinstance(error, NbdiffError), f"{type(error).__name__} is not an NbdiffError"
    assert type(error).__module__ == "nbdiff.errors"
    return str(error)


# -- calling a function with the wrong arguments ---------------------------------------------------------------------
def test_wrong_argument_count_names_the_inputs_and_the_call():
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x))
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(np.ones(3), np.ones(3))
    text = message_of(info)
    assert "function: expected 1 argument(s) (x: float64[?]), got 2" in text
    assert at(line) in text
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f()
    assert "got 0" in message_of(info) and at(line) in message_of(info)


def test_wrong_number_of_dimensions_names_argument_shape_and_declaration():
    declared = lineno() + 1
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x))
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(np.ones((2, 2)))
    text = message_of(info)
    assert "argument 0 (x: float64[?])" in text
    assert "expected 1 dimension(s), got an array of shape (2, 2)" in text
    assert at(line) in text
    assert f"x declared at {at(declared)}" in text


def test_static_shape_mismatch_at_call_time():
    x = nd.vector("x", shape=(3,))
    f = nd.function([x], x * 2.0)
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(np.ones(4))
    text = message_of(info)
    assert "expected shape float64[3], got (4,)" in text and at(line) in text


@pytest.mark.parametrize(
    "value, fragment",
    [
        (np.array(["a", "b"]), "expected a numeric array, got dtype <U1"),
        (["a", "b"], "expected a numeric array, got dtype <U1"),
        (None, "expected a numeric array, got dtype object"),
        ([[1.0, 2.0], [3.0]], "cannot convert list to an array"),
    ],
)
def test_non_numeric_arguments(value, fragment):
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x))
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(value)
    text = message_of(info)
    assert fragment in text and "argument 0 (x: float64[?])" in text and at(line) in text


def test_float_array_to_an_int64_input_is_refused_as_lossy():
    n = nd.vector("n", dtype="int64")
    f = nd.function([n], n * 2)
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(np.array([1.5, 2.5]))
    text = message_of(info)
    assert "argument 0 (n: int64[?])" in text
    assert "cannot convert float64[2] to int64 without losing information" in text
    assert at(line) in text
    np.testing.assert_array_equal(f(np.array([1, 2], dtype="int32")), [2, 4])  # same-kind casts are fine


def test_symbolic_value_passed_to_a_function():
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x))
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(x)
    assert "got a symbolic variable" in message_of(info) and at(line) in message_of(info)


def test_keyword_misuse_names_the_call():
    a = nd.scalar("a")
    f = nd.function([a], a * 2.0)
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        f(b=1.0)
    assert "unexpected keyword argument 'b'" in message_of(info) and at(line) in message_of(info)


# -- derivatives -----------------------------------------------------------------------------------------------------
def test_grad_of_a_non_scalar_cost():
    x = nd.vector("x")
    with pytest.raises(GradientError) as info:
        line = lineno() + 1
        nd.grad(nd.exp(x), x)
    text = message_of(info)
    assert "grad: the cost must be a scalar" in text and "float64[?]" in text and at(line) in text


def test_grad_with_respect_to_an_integer_input():
    n = nd.vector("n", dtype="int64")
    with pytest.raises(UndefinedGradientError) as info:
        line = lineno() + 1
        nd.grad(nd.sum(n * 1.5), n)
    text = message_of(info)
    assert "n (int64[?])" in text and "mul" in text and at(line) in text


# -- building functions ------------------------------------------------------------------------------------------------
def test_missing_input_names_the_variable_and_where_it_was_declared():
    x = nd.vector("x")
    declared = lineno() + 1
    y = nd.vector("y")
    with pytest.raises(MissingInputError) as info:
        line = lineno() + 1
        nd.function([x], x + y)
    text = message_of(info)
    assert "depend on y (float64[?])" in text
    assert f"declared at {at(declared)}" in text
    assert at(line) in text


def test_constant_as_a_function_input():
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        nd.function([nd.constant(1.5)], nd.vector("x"))
    text = message_of(info)
    assert "input 0 (1.5: float64[]) is a constant" in text and at(line) in text


def test_intermediate_as_a_function_input():
    x = nd.vector("x")
    created = lineno() + 1
    e = nd.exp(x)
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        nd.function([e], e * 2.0)
    text = message_of(info)
    assert "is computed by exp" in text and f"at {at(created)}" in text and at(line) in text
    assert "float64[?]" in text


def test_function_inputs_must_be_a_list_of_distinct_variables():
    x = nd.vector("x")
    with pytest.raises(InputError) as info:
        line = lineno() + 1
        nd.function(x, x)
    assert "must be a list of variables" in message_of(info) and at(line) in message_of(info)
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        nd.function([x, x], x)
    assert "listed twice" in message_of(info) and at(line) in message_of(info)
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        nd.function([np.ones(3)], x)
    assert "must be a variable" in message_of(info) and at(line) in message_of(info)


# -- construction-time type and shape errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "axis, fragment",
    [(2, "axis 2 is out of bounds"), (-3, "axis -3 is out of bounds"), ((0, 0), "repeated axis"), (1.5, "axis must")],
)
def test_bad_axis(axis, fragment):
    m = nd.matrix("m")
    with pytest.raises(AxisError) as info:
        line = lineno() + 1
        nd.sum(m, axis=axis)
    text = message_of(info)
    assert text.startswith("sum: ") and fragment in text and at(line) in text


@pytest.mark.parametrize("dtype, shown", [("float16", "'float16'"), ("complex", "'complex128'"), ("banana", "banana")])
def test_unknown_dtype(dtype, shown):
    with pytest.raises(DTypeError) as info:
        line = lineno() + 1
        nd.vector("x", dtype=dtype)
    text = message_of(info)
    assert shown in text and "float64" in text and at(line) in text  # the message lists what is supported


def test_broadcasting_mismatch_at_construction():
    a = nd.vector("a", shape=(3,))
    b = nd.matrix("b", shape=(2, 4))
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        a + b
    text = message_of(info)
    assert text.startswith("add: ") and "(3,)" in text and "(2, 4)" in text and at(line) in text


def test_matmul_mismatch_at_construction():
    A = nd.matrix("A", shape=(2, 3))
    v = nd.vector("v", shape=(4,))
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        A @ v
    text = message_of(info)
    assert "matmul" in text and "float64[2, 3]" in text and "float64[4]" in text and at(line) in text


@pytest.mark.parametrize(
    "value, fragment",
    [("s", "dtype <U1"), (None, "dtype object"), ([[1.0, 2.0], [3.0]], "cannot convert list"), (1j, "complex128")],
)
def test_non_numeric_value_in_an_expression_names_the_op(value, fragment):
    x = nd.vector("x")
    with pytest.raises(DTypeError) as info:
        line = lineno() + 1
        x + value
    text = message_of(info)
    assert text.startswith("add: ") and fragment in text and "float64[?]" in text and at(line) in text


def test_python_integer_too_large_for_the_dtype():
    k = nd.vector("k", dtype="int8")
    with pytest.raises(DTypeError) as info:
        line = lineno() + 1
        k * 1000
    text = message_of(info)
    assert text.startswith("mul: ") and "1000 does not fit in int8" in text and at(line) in text


def test_bad_constant_values():
    with pytest.raises(DTypeError) as info:
        line = lineno() + 1
        nd.constant([[1, 2], [3]])
    assert "constant: cannot convert list" in message_of(info) and at(line) in message_of(info)
    with pytest.raises(DTypeError) as info:
        nd.constant(["a"], "float32")
    assert "could not convert string" in message_of(info)


# -- run-time shape errors point at the line that built the node -------------------------------------------------------
def test_matmul_shape_mismatch_at_call_time_names_the_line_of_the_product():
    A = nd.matrix("A")
    x = nd.vector("x")
    line = lineno() + 1
    y = A @ x
    f = nd.function([A, x], nd.sum(nd.tanh(y)))
    with pytest.raises(ShapeError) as info:
        f(np.ones((2, 3)), np.ones(4))
    text = message_of(info)
    assert text.startswith("matmul: ")
    assert "float64[2, 3]" in text and "float64[4]" in text
    assert f"{at(line)}: y = A @ x" in text


def test_broadcasting_mismatch_at_call_time_names_the_line_of_the_op():
    a, b = nd.vector("a"), nd.vector("b")
    line = lineno() + 1
    c = a * b
    f = nd.function([a, b], c)
    with pytest.raises(ShapeError) as info:
        f(np.ones(3), np.ones(4))
    text = message_of(info)
    assert text.startswith("mul: ") and "float64[3]" in text and "float64[4]" in text and at(line) in text


def test_run_time_error_inside_a_gradient_names_the_forward_line():
    a, b = nd.vector("a"), nd.vector("b")
    forward = lineno() + 1
    c = nd.sum(a * b)
    f = nd.function([a, b], nd.grad(c, a))
    with pytest.raises(ShapeError) as info:
        f(np.ones(3), np.ones(4))
    assert at(forward) in message_of(info)


def _product_built_first(a, b):
    return a * b


def _product_built_again_and_called(a, b):
    product = a * b  # the same node as _product_built_first's (hash-consing)
    f = nd.function([a, b], product)
    return f(np.ones(3), np.ones(4))


def test_a_shared_node_names_the_running_code_line_first():
    a, b = nd.vector("a"), nd.vector("b")
    _product_built_first(a, b)
    first = _product_built_first.__code__.co_firstlineno + 1
    again = _product_built_again_and_called.__code__.co_firstlineno + 1
    with pytest.raises(ShapeError) as info:
        _product_built_again_and_called(a, b)
    text = message_of(info)
    assert f"created at {at(again)}: product = a * b" in text
    assert f"also built at {at(first)}: return a * b" in text


def test_a_shared_node_from_another_cell_names_the_running_cell_first():
    a, b = nd.vector("a"), nd.vector("b")
    cells = {"a": a, "b": b, "nd": nd, "np": np}
    exec(compile("first = a * b\n", "<cell 1>", "exec"), cells)
    second = "again = a * b\nf = nd.function([a, b], again)\nf(np.ones(3), np.ones(4))\n"
    with pytest.raises(ShapeError) as info:
        exec(compile(second, "<cell 2>", "exec"), cells)
    text = message_of(info)
    assert text.index("created at <cell 2>:1") < text.index("also built at <cell 1>:1")


# -- a variable used as a Python value ---------------------------------------------------------------------------------
def test_truth_value_of_a_variable():
    x = nd.vector("x")
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        bool(x)
    text = message_of(info)
    assert text.startswith("x: ") and "truth value" in text and "float64[?]" in text and at(line) in text
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        if nd.exp(x):
            pass
    assert at(line) in message_of(info)
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        if x > 0:
            pass
    assert "greater" in message_of(info) and at(line) in message_of(info)


def test_iterating_a_variable():
    x = nd.vector("x")
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        list(x)
    text = message_of(info)
    assert "cannot be iterated" in text and "float64[?]" in text and at(line) in text
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        len(x)
    assert "known first dimension" in message_of(info) and at(line) in message_of(info)
