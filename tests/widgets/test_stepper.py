"""The rewrite stepper: what it shows for each pass of a real function's history, and how it steps."""

from __future__ import annotations

import html

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import InputError
from nbdiff.graph.basic import Constant
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.printing import dprint_str
from nbdiff.ops.elemwise import Mul
from nbdiff.rewrite.engine import rule
from nbdiff.rewrite.pipeline import rule_pass, run_pipeline
from nbdiff.widgets.stepper import MAX_FIRINGS_SHOWN, NO_HISTORY, firing_lines, pass_summary


@rule(Mul)
def drop_times_one(node, facts):
    """x * 1 -> x (when the result keeps x's type)"""
    a, b = node.inputs
    if isinstance(b, Constant) and np.all(b.data == 1) and a.type == node.outputs[0].type:
        return a
    return None


def gradient_function():
    x = nd.vector("x")
    y = nd.sum(nd.tanh(x) * nd.exp(-x * x))
    return nd.function([x], [y, nd.grad(y, x)])


def expected_summary(record, position: int, total: int) -> list[str]:
    state = "changed" if record.changed else "unchanged"
    return [
        f"pass {position + 1} of {total}: {record.name} ({state})",
        f"time: {record.seconds * 1e3:.2f} ms",
        f"nodes: {record.nodes_before} -> {record.nodes_after}",
    ]


def test_stepping_through_a_real_functions_history():
    f = gradient_function()
    assert "fusion" in [r.name for r in f.history], "the default pipeline ends with fusion"
    stepper = nd.rewrite_stepper(f)
    assert "nbdiff-stepper" in stepper._dom_classes
    total = len(f.history)
    assert (stepper.slider.min, stepper.slider.max) == (1, total)  # numbered from 1, as "pass 1 of N" says
    for position, record in enumerate(f.history):
        assert stepper.index == position and stepper.record is record and stepper.slider.value == position + 1
        lines = stepper.text().splitlines()
        assert lines[:3] == expected_summary(record, position, total)
        for firing in record.firings[:MAX_FIRINGS_SHOWN]:
            assert f"{firing.rule}: {firing.before} -> {firing.after}  ({firing.where})" in lines
            assert f"{firing.identity}" in stepper.text()
        assert html.escape(dprint_str(record.before)) in stepper.before.value
        assert html.escape(dprint_str(record.after)) in stepper.after.value
        assert f"({record.nodes_before} node" in stepper.before.value
        assert stepper.before.value.count('<svg class="nbdiff-graph"') == 1  # drawn as nd.draw draws
        assert stepper.after.value.count('<svg class="nbdiff-graph"') == 1
        if record.name == "fusion" and record.changed:
            kernel_box = '<g class="nbdiff-kernel'  # a fused kernel drawn as a compound box
            assert kernel_box in stepper.after.value and kernel_box not in stepper.before.value
        assert stepper.previous_button.disabled == (position == 0)
        assert stepper.next_button.disabled == (position == total - 1)
        stepper.next_button.click()
    assert stepper.index == total - 1  # next stops at the last pass
    assert dprint_str(stepper.record.after) == dprint_str(f.graph)  # the last pass's result is what runs
    stepper.previous_button.click()
    assert stepper.index == max(total - 2, 0)
    stepper.step(-100)
    assert stepper.index == 0


def test_a_pass_that_fired_shows_its_rule_identity_and_place():
    x = nd.vector("x")
    y = nd.tanh(x) * 1.0
    z = nd.exp(y) * 1.0
    graph = Graph([x], [z])
    _, history = run_pipeline(graph, [rule_pass("drop-ones", [drop_times_one])])
    stepper = nd.rewrite_stepper(history)
    (record,) = history
    assert record.changed and record.nodes_before == 4 and record.nodes_after == 2
    text = stepper.text()
    assert text.splitlines()[:4] == [
        *expected_summary(record, 0, 1),
        "rules fired: 2",
    ]
    assert "  drop_times_one x2: x * 1 -> x (when the result keeps x's type)" in text
    firings = text.splitlines()[5:]  # after the summary and the rule's identity: each firing, naming the user line
    assert firings[0].startswith("drop_times_one: mul(tanh, 1.0) -> tanh(x)  (test_stepper.py:")
    assert firings[0].endswith(": y = nd.tanh(x) * 1.0)")
    assert firings[1].startswith("drop_times_one: mul(exp, 1.0) -> exp(tanh)  (test_stepper.py:")
    assert ": z = nd.exp(y) * 1.0" in firings[1]
    assert "mul" in stepper.before.value and "mul" not in stepper.after.value
    assert stepper.previous_button.disabled and stepper.next_button.disabled and stepper.slider.disabled


def test_unchanged_pass_says_so():
    x = nd.vector("x")
    _, history = run_pipeline(Graph([x], [nd.tanh(x)]), [rule_pass("drop-ones", [drop_times_one])])
    lines = pass_summary(history[0], 0, 1).splitlines()
    assert lines[0] == "pass 1 of 1: drop-ones (unchanged)"
    assert lines[-1] == "rules fired: none"
    assert firing_lines(history[0]) == []


def test_long_firing_lists_are_cut():
    x = nd.vector("x")
    y = x
    for _ in range(MAX_FIRINGS_SHOWN + 5):
        y = nd.tanh(y) * 1.0
    _, history = run_pipeline(Graph([x], [y]), [rule_pass("drop-ones", [drop_times_one])])
    lines = firing_lines(history[0])
    assert len(lines) == MAX_FIRINGS_SHOWN + 1
    assert lines[-1] == "... and 5 more"


def test_slider_selects_a_pass():
    f = gradient_function()
    stepper = nd.rewrite_stepper(f)
    last = len(f.history) - 1
    stepper.index = last
    assert stepper.slider.value == last + 1  # the slider shows the pass's number, from 1
    stepper.slider.value = 1
    assert stepper.index == 0 and stepper.text().startswith(f"pass 1 of {last + 1}: ")
    stepper.index = last
    assert stepper.text().splitlines()[0].startswith(f"pass {last + 1} of {last + 1}: {f.history[last].name}")
    with pytest.raises(IndexError, match="outside"):
        stepper.index = last + 1


def test_empty_history():
    x = nd.vector("x")
    f = nd.function([x], nd.tanh(x), rewrites=False)
    stepper = nd.rewrite_stepper(f)
    assert stepper.record is None
    assert stepper.text() == NO_HISTORY
    assert NO_HISTORY in stepper.summary.value
    assert stepper.previous_button.disabled and stepper.next_button.disabled
    stepper.step(1)
    assert stepper.index == 0


def test_rewrite_stepper_needs_a_function_or_history():
    with pytest.raises(InputError, match="rewrite_stepper: expected an nd.function or its history, got int"):
        nd.rewrite_stepper(3)


@rule(Mul)
def long_identity(node, facts):
    """x * 1 -> x, a rule whose identity is written over two lines of its docstring, so that a first line alone
    would stop mid-sentence.

    Further paragraphs explain, and are not part of the identity."""
    return drop_times_one.function(node, facts)


def test_the_identity_is_the_whole_first_paragraph_and_counts_read_right():
    x = nd.vector("x")
    _, history = run_pipeline(Graph([x], [nd.tanh(x) * 1.0]), [rule_pass("long", [long_identity])])
    (record,) = history
    assert long_identity.identity == (
        "x * 1 -> x, a rule whose identity is written over two lines of its docstring, so that a first line alone "
        "would stop mid-sentence."
    )
    stepper = nd.rewrite_stepper(history)
    assert f"  long_identity x1: {long_identity.identity}" in stepper.text()
    assert record.nodes_after == 1
    assert "(1 node)" in stepper.after.value and "(1 nodes)" not in stepper.after.value
    assert "(2 nodes)" in stepper.before.value
    assert stepper.slider.value == 1 and stepper.text().startswith("pass 1 of 1")
