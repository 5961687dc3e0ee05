"""Hostile sizes and argument kinds are refused while the graph is built, with typed nbdiff errors naming the
constructor or op, the offending value and the user's line: ranks and shapes no NumPy array can have, integer
indices outside ``np.intp``, aranges too large to allocate, names, dtypes and shapes of the wrong kind."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import DTypeError, ExecutionError, GraphError, IndexingError, NbdiffError, ShapeError
from nbdiff.graph.basic import Constant
from nbdiff.graph.types import MAX_INDEX, broadcast_array_shapes, max_ndim
from nbdiff.ops.shape import ARANGE_CONSTANT_MAX, Arange

HERE = Path(__file__).name


def lineno() -> int:
    """The caller's current line number."""
    return sys._getframe(1).f_lineno


def message_of(excinfo: pytest.ExceptionInfo, line: int) -> str:
    """The error's message, after checking it is nbdiff's own error and names the user's ``line``."""
    error = excinfo.value
    assert isinstance(error, NbdiffError), f"{type(error).__name__} is not an NbdiffError: {error}"
    text = str(error)
    assert f"{HERE}:{line}" in text, f"the message does not name line {line}:\n{text}"
    return text


def numpy_max_ndim() -> int:
    """NumPy's own limit, read the slow way for the test: the largest rank ``np.empty`` accepts."""
    ndim = 1
    while ndim < 1000:
        try:
            np.empty((1,) * (ndim + 1))
        except ValueError:
            return ndim
        ndim += 1
    raise AssertionError("no dimension limit found")


# -- ranks and shapes -----------------------------------------------------------------------------------------------
def test_max_ndim_is_numpys_limit():
    assert max_ndim() == numpy_max_ndim()
    assert max_ndim() in (32, 64)  # NumPy 1 and NumPy 2


def test_the_largest_rank_numpy_allows_is_accepted():
    x = nd.tensor("x", ndim=max_ndim())
    assert x.ndim == max_ndim()


@pytest.mark.parametrize("ndim", [65, 10**8, 10**100], ids=["65", "1e8", "1e100"])
def test_ndim_beyond_numpys_limit_is_refused(ndim):
    ndim = max(ndim, max_ndim() + 1)
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.tensor("x", ndim=ndim)
    text = message_of(info, line)
    assert f"tensor 'x': ndim: {ndim} dimensions, but a NumPy array has at most {max_ndim()}" in text


@pytest.mark.parametrize("ndim", [-1, 2.0, "3", True, None])
def test_ndim_of_the_wrong_kind_is_refused(ndim):
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.tensor("x", ndim=ndim)
    text = message_of(info, line)
    assert "tensor 'x': " in text
    assert "ndim" in text


def test_shape_with_too_many_dimensions_is_refused():
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.tensor("x", shape=(1,) * (max_ndim() + 1))
    assert f"but a NumPy array has at most {max_ndim()}" in message_of(info, line)


@pytest.mark.parametrize(
    "shape",
    [(2**63,), (2**62, 4), (0, 2**62, 4), (None, 2**61), (MAX_INDEX // 8 + 1,)],
    ids=["2**63", "product-overflows", "next-to-zero", "next-to-unknown", "bytes-overflow"],
)
def test_shapes_no_array_can_have_are_refused(shape):
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.tensor("x", shape=shape)
    text = message_of(info, line)
    assert f"tensor 'x': shape {shape} of float64 needs at least" in text
    assert f"a NumPy array holds at most {MAX_INDEX}" in text


def test_the_largest_shape_numpy_allows_is_accepted():
    assert nd.vector("x", dtype="int8", shape=(MAX_INDEX,)).shape == (MAX_INDEX,)
    assert nd.tensor("x", shape=(np.int64(2), None, 3)).type.shape == (2, None, 3)  # NumPy ints become Python ints
    assert type(nd.tensor("x", shape=(np.int64(2),)).shape[0]) is int


@pytest.mark.parametrize("shape", [(-1,), (2.0,), ("a",), (True,)])
def test_bad_shape_entries_are_refused(shape):
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.vector("x", shape=shape)
    assert f"vector 'x': shape entries must be non-negative ints or None, got {shape!r}" in message_of(info, line)


@pytest.mark.parametrize("shape", [3, "ab", b"ab", 2.5, object()], ids=["int", "str", "bytes", "float", "object"])
def test_a_shape_that_is_no_sequence_is_refused(shape):
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.matrix("W", shape=shape)
    text = message_of(info, line)
    assert f"matrix 'W': shape must be a tuple or list of non-negative ints or None, got {type(shape).__name__}" in text


def test_ops_whose_result_exceeds_the_rank_limit_are_refused():
    x = nd.tensor("x", ndim=max_ndim())
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.expand_dims(x, 0)
    text = message_of(info, line)
    assert f"expand_dims: the result would have {max_ndim() + 1} dimensions" in text
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        x[None]
    assert "index: the result would have" in message_of(info, line)


def test_broadcast_to_a_shape_no_array_can_have_is_refused():
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.broadcast_to(nd.scalar("s"), (2**62, 4))
    assert "broadcast_to: shape (4611686018427387904, 4) of float64 needs at least" in message_of(info, line)


def test_take_along_axis_beyond_numpys_index_array_limit_is_refused():
    x, i = nd.tensor("x", ndim=max_ndim()), nd.tensor("i", ndim=max_ndim(), dtype="int64")
    with pytest.raises(IndexingError) as info:
        line = lineno() + 1
        nd.take_along_axis(x, i, axis=0)
    assert f"take_along_axis: NumPy indexes with at most {max_ndim() - 1} arrays" in message_of(info, line)


# -- constructor arguments ------------------------------------------------------------------------------------------
CONSTRUCTORS = {"scalar": {}, "vector": {}, "matrix": {}, "tensor": {"ndim": 3}}  # kind -> its other arguments


@pytest.mark.parametrize("kind", CONSTRUCTORS)
@pytest.mark.parametrize("name", [b"x", 3, 2.5, ["x"], nd.scalar], ids=["bytes", "int", "float", "list", "function"])
def test_a_name_that_is_no_str_is_refused(kind, name):
    with pytest.raises(GraphError) as info:
        line = lineno() + 1
        getattr(nd, kind)(name, **CONSTRUCTORS[kind])
    text = message_of(info, line)
    assert f"{kind}: the name must be a str or None, got {type(name).__name__}" in text
    assert isinstance(info.value, TypeError)  # generic handlers still work


@pytest.mark.parametrize("kind", CONSTRUCTORS)
@pytest.mark.parametrize("dtype", [object(), "nonsense", "f8,", "(", [1, 2], "complex128", "float16"])
def test_a_dtype_nbdiff_does_not_support_is_refused(kind, dtype):
    with pytest.raises(DTypeError) as info:
        line = lineno() + 1
        getattr(nd, kind)("v", dtype=dtype, **CONSTRUCTORS[kind])
    text = message_of(info, line)
    assert f"{kind} 'v': un" in text  # "unknown dtype ..." or "unsupported dtype ..."
    assert "nbdiff supports bool, int8" in text


def test_none_name_and_valid_arguments_still_work():
    assert nd.vector().name is None
    assert nd.matrix("W", dtype=np.float32, shape=[3, None]).type.describe() == "float32[3, ?]"


# -- integer indices ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "index",
    [2**63, -(2**63) - 1, np.uint64(2**63), np.array(2**63, dtype=np.uint64), np.array([1, 2**63], dtype=np.uint64)],
    ids=["2**63", "-2**63-1", "uint64", "0-d-uint64", "uint64-array"],
)
def test_integer_indices_outside_intp_are_refused_at_construction(index):
    x = nd.vector("x")  # length unknown: no bounds check can catch it
    with pytest.raises(IndexingError) as info:
        line = lineno() + 1
        x[index]
    text = message_of(info, line)
    assert "index: index " in text
    assert "integer indices must fit in np.intp (int64)" in text
    assert "float64[?]" in text


def test_integer_indices_at_the_ends_of_intp_build_and_fail_at_the_call_in_nbdiff_words():
    x = nd.vector("x")
    assert x[2**63 - 1].shape == () and x[-(2**63)].shape == ()
    f = nd.function([x], x[2**63 - 1])
    with pytest.raises(NbdiffError, match="index: failed at run time"):
        f(np.ones(3))


# -- arange ---------------------------------------------------------------------------------------------------------
def test_a_huge_arange_builds_without_allocating_and_fails_at_the_call():
    line = lineno() + 1
    big = nd.arange(2**59)  # 4 EiB of int64: more than any address space, even with 5-level paging
    assert isinstance(big.owner.op, Arange) and big.type.describe() == f"int64[{2**59}]"
    x = nd.vector("x")
    f = nd.function([x], nd.sum(x) + nd.sum(big))
    with pytest.raises(ExecutionError) as info:
        f(np.ones(3))
    text = str(info.value)
    assert "arange: failed at run time: Unable to allocate" in text
    assert f"created at {HERE}:{line}" in text


def test_arange_larger_than_any_array_is_refused_at_construction():
    with pytest.raises(ShapeError) as info:
        line = lineno() + 1
        nd.arange(2**70)
    assert f"arange: shape ({2**70},) of int64 needs at least" in message_of(info, line)
    for stop in (float("inf"), float("nan")):
        with pytest.raises(ShapeError) as info:
            line = lineno() + 1
            nd.arange(0, stop)
        assert "arange: cannot compute the length of arange(0, " in message_of(info, line)


ARANGE_ARGUMENTS = [
    (5,),
    (0, 10.0, 1),
    (0, 10, 0.5),
    (5, 0, -2),
    (3, 1),
    (np.float32(0), 10, 1),
    (np.int32(0), np.int32(10), 1),
    (np.uint8(0), 10, 1),
    (np.int8(0), 10, np.int16(1)),
    (0, 10, np.float32(0.5)),
    (np.uint64(0), 10, 1),
    (np.float32(0.1), np.float32(0.9), np.float32(0.1)),
]


@pytest.mark.parametrize("arguments", ARANGE_ARGUMENTS, ids=repr)
def test_arange_values_dtype_and_length_are_numpys(arguments):
    """Both forms, the constant and the node computed at run time (forced here on a small range)."""
    expected = np.arange(*arguments)
    small = nd.arange(*arguments)
    assert isinstance(small, Constant)
    np.testing.assert_array_equal(small.data, expected)
    assert small.dtype == expected.dtype.name
    start, stop, step = {1: (arguments[0], None, 1), 2: (*arguments, 1), 3: arguments}[len(arguments)]
    lazy = Arange(start, stop, step, dtype=small.dtype)()
    assert lazy.shape == expected.shape
    (value,) = nd.function([], [lazy])()
    np.testing.assert_array_equal(value, expected)


def test_arange_beyond_the_constant_limit_is_computed_when_the_function_runs():
    x = nd.vector("x", shape=(3,))
    y = x * nd.arange(ARANGE_CONSTANT_MAX + 3)[-3:]
    f = nd.function([x], y)
    assert any(isinstance(node.op, Arange) for node in f.graph.nodes)  # not folded into a 64K constant
    np.testing.assert_array_equal(f(np.ones(3)), np.arange(ARANGE_CONSTANT_MAX, ARANGE_CONSTANT_MAX + 3))
    (gx,) = nd.function([x], nd.grad(nd.sum(y), [x]))(np.ones(3))
    np.testing.assert_array_equal(gx, np.arange(ARANGE_CONSTANT_MAX, ARANGE_CONSTANT_MAX + 3))


# -- broadcasting beyond np.broadcast_shapes' 32 dimensions ---------------------------------------------------------
def test_broadcast_array_shapes_is_numpys_rule_and_message():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        shapes = [tuple(int(d) for d in rng.choice([0, 1, 2, 3], size=rng.integers(0, 4))) for _ in range(4)]
        shapes = shapes[: rng.integers(0, 5)]
        try:
            expected: object = np.broadcast_shapes(*shapes)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: object = broadcast_array_shapes(*shapes)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, shapes


def test_broadcast_array_shapes_beyond_32_dimensions():
    shape = (2,) + (1,) * 38 + (3,)
    assert broadcast_array_shapes(shape, (3,), (1,) * 40) == shape
