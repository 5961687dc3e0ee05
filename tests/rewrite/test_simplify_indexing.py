"""Indexing simplification: each rule fires on its pattern (recorded in ``f.history``), stays away from slices,
index arrays, unknown lengths and other shapes, never changes a value, keeps float32, and shrinks the Hessian of a
20-op expression in four scalars below PyTensor's rewritten graph."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.graph.basic import Constant
from nbdiff.ops.indexing import ARRAY, Index, IndexAdd
from nbdiff.ops.shape import Stack
from nbdiff.rewrite.simplify_indexing import INDEXING_RULES

PASSES = ["merge", "fold", "simplify"]
RNG = np.random.default_rng(0)
P = np.array([0.3, -0.7, 1.1, 0.5])
U = RNG.normal(size=3)
V = RNG.normal(size=2)
M = RNG.normal(size=(3, 4))


def rule_names(f) -> list[str]:
    return [firing.rule for record in f.history for firing in record.firings]


def both(inputs, outputs, passes=PASSES):
    """The function with ``passes``, and the same function as written."""
    return nd.function(inputs, outputs, rewrites=passes), nd.function(inputs, outputs, rewrites=False)


def assert_same_values(f, f0, *args, tol=1e-12) -> None:
    got, want = f(*args), f0(*args)
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def ops_left(f) -> Counter:
    return Counter(type(node.op) for node in f.graph.nodes)


# ---------------------------------------------------------------------------------------------------------------
# Each rule fires on its pattern
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    rule: str
    build: Callable  # () -> (inputs, outputs, arguments)
    gone: type  # an op kind the rewritten graph no longer holds


def stack_of_scalars():
    a, b = nd.scalar("a"), nd.scalar("b")
    s = nd.stack([a, b, nd.sin(a * b)])
    return [a, b], [s[2], s[-3]], [0.4, -1.3]


def stack_of_vectors_with_rest():
    u, v = nd.vector("u"), nd.vector("v")
    return [u, v], [nd.stack([u, v])[1, 1:]], [U, U[::-1].copy()]


def concatenate_pieces():
    u, v = nd.vector("u", shape=(3,)), nd.vector("v")
    c = nd.concatenate([u, v])
    return [u, v], [c[4], c[1]], [U, V]


def concatenate_rows_with_rest():
    m, n = nd.matrix("m", shape=(3, 4)), nd.matrix("n", shape=(2, 4))
    return [m, n], [nd.concatenate([m, n])[-1, ::2]], [M, M[:2] * 2.0]


def one_hot_read_back():
    p = nd.vector("p")  # unknown length: the written one-hot vector is not a constant
    g = nd.grad(p[1] * 3.0, p)
    return [p], [g[1] * nd.sum(p), g[0] * nd.sum(p)], [P]


def written_scalar_read_back():
    p, s = nd.vector("p"), nd.scalar("s")
    written = IndexAdd((1,))(p, nd.exp(s))
    return [p, s], [written[1], written[-4 + 4]], [P, 0.2]


def row_written_element_read():
    m, s = nd.matrix("m"), nd.vector("s")
    written = IndexAdd((0,))(m, nd.exp(s))
    return [m, s], [written[2, 1]], [M, np.ones(4)]


def one_hot_of_a_scalar():
    p, s = nd.vector("p", shape=(3,)), nd.scalar("s")
    return [p, s], [IndexAdd((-1,))(p, nd.exp(s)) * 2.0], [P[:3], 0.4]


def constant_one_hot():
    p = nd.vector("p", shape=(4,))
    return [p], [IndexAdd((2,))(p, nd.constant(1.5)) * p], [P]


def gradient_of_scalars():
    p = nd.vector("p", shape=(4,))
    y = nd.sin(p[0] * p[2]) + p[0] ** 2 - nd.exp(p[-1])
    return [p], [nd.grad(y, p)], [P]


CASES = [
    Case("index_of_stack", stack_of_scalars, Stack),
    Case("index_of_stack", stack_of_vectors_with_rest, Stack),
    Case("index_of_concatenate", concatenate_pieces, type(None)),
    Case("index_of_concatenate", concatenate_rows_with_rest, type(None)),
    Case("index_of_index_add", one_hot_read_back, IndexAdd),
    Case("index_of_index_add", written_scalar_read_back, IndexAdd),
    Case("index_of_index_add", row_written_element_read, IndexAdd),
    Case("index_add_of_constant", constant_one_hot, IndexAdd),
    Case("index_add_as_stack", one_hot_of_a_scalar, IndexAdd),
    Case("sum_of_scalar_vectors", gradient_of_scalars, IndexAdd),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}-{c.build.__name__}" for c in CASES])
def test_rule_fires_on_its_pattern_and_keeps_values(case: Case):
    inputs, outputs, arguments = case.build()
    f, f0 = both(inputs, outputs)
    assert case.rule in rule_names(f), rule_names(f)
    rule = next(r for r in INDEXING_RULES if r.name == case.rule)
    firing = next(fi for record in f.history for fi in record.firings if fi.rule == case.rule)
    assert firing.identity == rule.identity and "->" in rule.identity
    assert ops_left(f)[case.gone] == 0
    assert len(f.graph.nodes) <= len(f.graph_as_written.nodes)
    assert_same_values(f, f0, *arguments)


def test_every_indexing_rule_has_a_case():
    assert {r.name for r in INDEXING_RULES} == {case.rule for case in CASES}


def test_concatenate_read_becomes_an_index_of_one_piece():
    inputs, outputs, arguments = concatenate_pieces()
    f, _ = both(inputs, outputs)
    reads = [node for node in f.graph.nodes if isinstance(node.op, Index)]
    assert sorted((node.inputs[0].name, node.op.items) for node in reads) == [("u", (1,)), ("v", (1,))]


def test_a_sum_of_one_hot_gradients_becomes_one_stack_with_constant_zeros():
    p = nd.vector("p", shape=(4,))
    f, f0 = both([p], nd.grad(p[3] * p[0], p))
    (stack,) = [node for node in f.graph.nodes if isinstance(node.op, Stack)]
    assert len(stack.inputs) == 4
    zeros = [v for v in stack.inputs if isinstance(v, Constant)]
    assert len(zeros) == 2 and all(float(z.data) == 0.0 for z in zeros)
    assert_same_values(f, f0, P)


def test_entries_written_twice_are_left_as_a_vector_add():
    """p[1] and p[-2] are different nodes reading the same entry: their one-hot gradients overlap."""
    p = nd.vector("p", shape=(3,))
    f, f0 = both([p], nd.grad(p[1] * p[-2] + p[0], p))
    assert "index_add_as_stack" in rule_names(f)
    assert ops_left(f)[IndexAdd] == 0
    assert len([node for node in f.graph.nodes if node.op.name == "add" and node.out.ndim == 1]) == 1
    assert_same_values(f, f0, P[:3])


# ---------------------------------------------------------------------------------------------------------------
# ... and does not fire where it would be wrong
# ---------------------------------------------------------------------------------------------------------------
def not_firing_cases():
    a, b = nd.scalar("a"), nd.scalar("b")
    u, v = nd.vector("u"), nd.vector("v")
    p, q = nd.vector("p", shape=(4,)), nd.vector("q")
    m, w = nd.matrix("m"), nd.vector("w", shape=(65,))
    i = nd.scalar("i", dtype="int64")
    k = nd.vector("k", dtype="int64")
    return [
        ("index_of_stack", [a, b, i], nd.stack([a, b])[i], [0.5, 2.0, 1]),  # symbolic index
        ("index_of_stack", [u, v], nd.stack([u, v])[0:1], [U, U]),  # a slice first
        ("index_of_stack", [u, v], nd.stack([u, v], axis=1)[1], [U, U]),  # stacked on another axis
        ("index_of_concatenate", [u, v], nd.concatenate([u, v])[1], [U, V]),  # u's length known only at run time
        ("index_of_concatenate", [u, v], nd.concatenate([u, v])[1:3], [U, V]),  # a slice
        ("index_of_index_add", [q, a], IndexAdd((1,))(q, a)[-1], [P, 0.5]),  # -1 of an unknown length
        ("index_of_index_add", [q, a], IndexAdd(((1, 3, None),))(q, nd.stack([a, a]))[1], [P, 0.5]),  # slice
        ("index_of_index_add", [q, k, a], IndexAdd((ARRAY,))(q, a, k)[1], [P, np.array([1, 1]), 0.5]),  # array
        ("index_of_index_add", [m, u], IndexAdd((1,))(m, u)[1, 2], [M, np.ones(4)]),  # a row written, one read
        ("index_of_index_add", [m, a], IndexAdd((1, 2))(m, a)[1], [M, 0.5]),  # one written, a row read
        ("index_add_of_constant", [q], IndexAdd((1,))(q, nd.constant(2.0)), [P]),  # like's length unknown
        ("index_add_of_constant", [p, a], IndexAdd((1,))(p, a), [P, 0.5]),  # a symbolic value
        ("index_add_as_stack", [q, a], IndexAdd((1,))(q, a), [P, 0.5]),  # like's length unknown
        ("index_add_as_stack", [m, u], IndexAdd((1,))(m, u), [M, np.ones(4)]),  # a row of a matrix
        ("index_add_as_stack", [w, a], IndexAdd((1,))(w, a), [np.ones(65), 0.5]),  # too long to unroll
        ("sum_of_scalar_vectors", [q, a, b], IndexAdd((0,))(q, a) + IndexAdd((1,))(q, b), [P, 0.5, 2.0]),
        ("sum_of_scalar_vectors", [p, a, u], IndexAdd((0,))(p, a) + u, [P, 0.5, P[::-1].copy()]),  # u: no scalars
        ("sum_of_scalar_vectors", [p, a, k], IndexAdd((ARRAY,))(p, a, k) + IndexAdd((0,))(p, a), [P, 0.5, [2, 2]]),
        (
            "sum_of_scalar_vectors",
            [p, a],
            IndexAdd(((0, 2, None),))(p, nd.stack([a, a])) + IndexAdd((1,))(p, a),
            [P, 0.5],
        ),
        ("sum_of_scalar_vectors", [a, b], nd.stack([a, b]) + nd.stack([b, a]), [0.5, 2.0]),  # entries overlap
    ]


@pytest.mark.parametrize("position", range(len(not_firing_cases())))
def test_rule_does_not_fire_out_of_its_pattern(position):
    rule, inputs, output, arguments = not_firing_cases()[position]
    f, f0 = both(inputs, output)
    assert rule not in rule_names(f)
    assert_same_values(f, f0, *[np.asarray(a) for a in arguments])


# ---------------------------------------------------------------------------------------------------------------
# Jacobians and Hessians of functions of scalars
# ---------------------------------------------------------------------------------------------------------------
def expr20(p):
    """The benchmark's 20-op elementwise expression in the scalars p[0], p[1], p[2], p[3]."""
    a, b, c, d = p[0], p[1], p[2], p[3]
    return (
        nd.sin(a * b) + nd.exp(-(c * c)) * nd.tanh(d) + nd.log1p(a * a + b * b) * nd.cos(c * d) - (a - d) / (b * b + 1)
    )


def hessian20(dtype="float64"):
    p = nd.vector("p", shape=(4,), dtype=dtype)
    return [p], [nd.hessian(expr20(p), p)]


def test_hessian_of_the_20_op_expression_is_no_larger_than_pytensors():
    """PyTensor 3 needs 15 nodes (vectorized jacobian) or 11 + 12 (Scan) after its default rewrites."""
    inputs, outputs = hessian20()
    f, f0 = both(inputs, outputs, passes=True)
    assert len(f.graph.nodes) <= 15, Counter(node.op.name for node in f.graph.nodes)
    assert ops_left(f)[IndexAdd] == 0
    for p in (P, np.array([0.9, 0.2, -0.4, 1.3]), np.array([-2.0, 1.5, 0.1, -0.3])):
        assert_same_values(f, f0, p)
    h = f(P)[0]
    np.testing.assert_allclose(h, h.T, rtol=1e-12, atol=1e-12)


def test_hessian_in_float32_stays_float32():
    inputs, outputs = hessian20("float32")
    f, f0 = both(inputs, outputs, passes=True)
    assert all(v.dtype == "float32" for node in f.graph.nodes for v in node.outputs)
    got, want = f(P.astype("float32"))[0], f0(P.astype("float32"))[0]
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_jacobian_of_a_vector_of_scalars_has_no_indexing_left_but_the_inputs():
    p = nd.vector("p", shape=(3,))
    y = nd.stack([p[0] * p[1], nd.sin(p[2]), p[1] - p[0] ** 2])
    f, f0 = both([p], nd.jacobian(y, p), passes=True)
    assert ops_left(f)[IndexAdd] == 0
    assert all(node.inputs[0].name == "p" for node in f.graph.nodes if isinstance(node.op, Index))
    assert_same_values(f, f0, P[:3])
