"""The text printer: exact listings, shared-subexpression names, gradient labels, determinism, deep chains."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GraphError
from nbdiff.graph.basic import Op
from nbdiff.graph.printing import constant_text, dprint_str
from nbdiff.graph.provenance import Derivative, Origin, Site
from nbdiff.graph.types import TensorType

HERE = Path(__file__).name
ROOT = Path(__file__).resolve().parents[2]


def build_forward():
    """A small forward graph: a shared node, inlined single-use nodes, constants and a reduction."""
    x = nd.vector("x", shape=(3,))
    W = nd.matrix("W", dtype="float32")
    t = nd.tanh(x)
    y = nd.exp(nd.sin(t * t)) + t
    table = nd.constant(np.arange(12.0).reshape(4, 3))
    s = nd.sum(W * nd.constant([1.0, 2.0, 3.0], "float32") + table, axis=1)
    return [y, s]


def build_gradient():
    """A cost and its gradient, as a function (the gradient nodes carry "pullback of ..." transforms)."""
    x = nd.vector("x")
    t = nd.tanh(x)
    y = nd.sum(t * t + 2.0 * t)
    g = nd.grad(y, x)
    return nd.function([x], [y, g], rewrites=False)  # the graph as written: simplification removes grad-of-sum nodes


def line_of(function, offset: int) -> str:
    """``test_printing.py:N`` for the line ``offset`` lines below ``function``'s ``def``."""
    return f"{HERE}:{function.__code__.co_firstlineno + offset}"


def test_golden_listing_of_a_small_graph():
    text = dprint_str(build_forward())
    at = {k: line_of(build_forward, k) for k in range(2, 8)}
    expected = "\n".join(
        [
            f"input x                                 : float64[3]     @ {at[2]}",
            f"input W                                 : float32[?, ?]  @ {at[3]}",
            "c0 = constant                           : float64[4, 3]",
            f"%0 = tanh(x)                            : float64[3]     @ {at[4]}",
            f"%1 = exp(sin(mul(%0, %0)))              : float64[3]     @ {at[5]}",
            f"%2 = add(%1, %0)                        : float64[3]     @ {at[5]}",
            f"%3 = mul(W, float32([1.0, 2.0, 3.0]))   : float32[?, 3]  @ {at[7]}",
            f"%4 = add(%3, c0)                        : float64[4, 3]  @ {at[7]}",
            f"%5 = sum{{axes=(1,), keepdims=False}}(%4) : float64[4]     @ {at[7]}",
            "output %2, %5",
        ]
    )
    assert text == expected


def test_shared_subexpression_is_named_once_and_referenced():
    x = nd.vector("x")
    t = nd.exp(x)
    y = t * t + nd.sin(t)
    lines = dprint_str(y).splitlines()
    definitions = [ln for ln in lines if "exp(x)" in ln]
    assert len(definitions) == 1 and definitions[0].startswith("%0 = exp(x)")
    assert any(ln.startswith("%1 = add(mul(%0, %0), sin(%0))") for ln in lines)
    assert lines[-1] == "output %1"


def test_single_use_nodes_are_inlined_only_when_shallow():
    x = nd.vector("x")
    y = nd.sin(nd.cos(nd.exp(nd.tanh(x))))
    lines = dprint_str(y).splitlines()
    assert lines[1].startswith("%0 = cos(exp(tanh(x))) ")  # at most three calls deep
    assert lines[2].startswith("%1 = sin(%0) ")


def test_gradient_nodes_are_labelled_with_their_forward_node():
    f = build_gradient()
    text = dprint_str(f)
    assert f"[grad of tanh @ {line_of(build_gradient, 3)}]" in text
    assert f"[grad of sum @ {line_of(build_gradient, 4)}]" in text
    forward = [ln for ln in text.splitlines() if "tanh(x)" in ln]
    assert len(forward) == 1 and not forward[0].endswith("]")  # forward nodes carry no label
    grad_line = line_of(build_gradient, 5)
    assert all(grad_line in ln for ln in text.splitlines() if "[grad" in ln)


def test_forward_mode_nodes_are_labelled_jvp():
    x = nd.vector("x")
    y = nd.exp(x)
    text = dprint_str(nd.Rop(y, x, nd.ones_like(x)))
    assert f"[jvp of exp @ {HERE}:" in text


def test_origin_label_compacts_the_derivative_record():
    """The label names the forward node a gradient node differentiates (the outermost rule), then other notes."""
    site = Site("/src/f.py", 3, "<module>")
    pullback = Derivative("grad", "pullback", "tanh", site)
    assert Origin(site, (), pullback).label() == "grad of tanh @ f.py:3"
    inner = Derivative("", "pullback", "mul", Site("/src/f.py", 9, "<module>"))
    assert inner.within(Derivative("Rop", "pushforward", "exp", Site("f.py", 2, "<module>"))).label() == (
        "jvp of exp @ f.py:2"
    )
    assert Origin(site, (), Derivative("grad")).label() == "grad"
    assert Origin(site, ()).label() == ""
    fused = Origin(None, ("fused into kernel k3",), Derivative("grad", "pullback", "sum"))
    assert fused.label() == "grad of sum; fused into kernel k3"
    assert fused.notes() == "grad; pullback of sum; fused into kernel k3"


def test_same_graph_built_twice_prints_the_same():
    assert dprint_str(build_gradient()) == dprint_str(build_gradient())
    assert dprint_str(build_forward()) == dprint_str(build_forward())


def test_listing_is_stable_across_processes():
    """No ids or addresses: a fresh interpreter prints exactly what this one prints."""
    code = "from tests.graph.test_printing import build_gradient, dprint_str; print(dprint_str(build_gradient()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.rstrip("\n") == dprint_str(build_gradient())


def test_ten_thousand_node_chain_prints_without_recursion():
    x = nd.vector("x")
    y = x
    for _ in range(10_000):
        y = nd.tanh(y)
    lines = dprint_str(y).splitlines()
    assert lines[0].startswith("input x")
    assert lines[1].startswith("%0 = tanh(tanh(tanh(x)))")
    assert lines[-1] == f"output %{len(lines) - 3}"
    assert sum(ln.count("tanh(") for ln in lines) == 10_000


def test_constants_print_by_value_when_small():
    assert constant_text(nd.constant(2.0)) == "2.0"
    assert constant_text(nd.constant(3)) == "3"
    assert constant_text(nd.constant(0.5, "float32")) == "float32(0.5)"
    assert constant_text(nd.constant([[1, 2], [3, 4]], "int32")) == "int32([[1, 2], [3, 4]])"
    assert constant_text(nd.constant(np.zeros(100))) is None
    assert constant_text(nd.constant(np.zeros(100), name="bias")) == "bias"


def test_large_constants_get_a_name_and_a_line():
    x = nd.vector("x")
    big = nd.constant(np.ones(50))
    text = dprint_str([x + big, x * big])
    assert "c0 = constant" in text and "float64[50]" in text
    assert "add(x, c0)" in text and "mul(x, c0)" in text


def test_unnamed_and_repeated_input_names_stay_distinct():
    a, b, c = nd.vector(), nd.vector("v"), nd.vector("v")
    text = dprint_str(a + b + c)
    assert "input in0" in text and "input v " in text and "input v#2" in text
    assert "add(add(in0, v), v#2)" in text


def test_a_variable_that_is_an_input_prints_alone():
    x = nd.scalar("x")
    assert dprint_str(x) == f"input x : float64[]  @ {HERE}:{sys._getframe().f_lineno - 1}\noutput x"


class _MinMax(Op):
    """A two-output op used only here, to print a multi-output node (abstract keeps it out of the op registry)."""

    abstract = True
    nout = 2
    name = "minmax"

    def infer(self, x):
        return [TensorType(x.dtype, ()), TensorType(x.dtype, ())]

    def perform(self, x):
        return (np.asarray(x.min()), np.asarray(x.max()))


def test_multi_output_node_binds_every_output():
    x = nd.vector("x")
    low, high = _MinMax()(x)
    text = dprint_str(high - low)
    assert "%0, %1 = minmax(x) : float64[], float64[]" in text
    assert "sub(%1, %0)" in text


def test_dprint_writes_to_a_file_or_stdout(capsys):
    f = build_gradient()
    buffer = io.StringIO()
    assert nd.dprint(f, file=buffer) is None
    assert buffer.getvalue() == dprint_str(f) + "\n"
    nd.dprint(f.graph)
    assert capsys.readouterr().out == buffer.getvalue()
    assert repr(f.graph) == dprint_str(f)


def test_dprint_rejects_what_is_not_a_graph():
    with pytest.raises(GraphError, match="dprint: .* item 1 is a str"):
        dprint_str([nd.vector("x"), "y"])
