"""Property test of the rewrite pipeline: on random graphs and their gradients, the rewritten function computes
what the graph as written computes, and the verifier accepts the graph after every pass.

Graphs are drawn as programs, as in ``tests/test_property.py`` (whose shape strategies this reuses): a list of
steps applying unary, binary and reducing formulas to earlier values. The formulas include the unstable forms the
stability pass rewrites (``log(1 + a*a)``, ``exp(a) - 1``, ``log(1 + exp(a))``, ``log(sum(exp(a)))``, ...) with
arguments kept where the written forms are still accurate, so both graphs must agree to 1e-10 relative.
Here the reference is nbdiff itself with ``rewrites=False``, so the draw only needs nbdiff variables: shapes are
tracked through the static shapes of a graph built on static-shaped inputs while drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nbdiff as nd
from nbdiff.rewrite.verify import verify
from tests.test_property import axes_for, broadcastable, input_shapes


def squash(a: nd.Variable, scale: float = 3.0) -> nd.Variable:
    """``scale * tanh(a)``: an argument in ``(-scale, scale)``, where exp and log forms stay accurate as written."""
    return nd.tanh(a) * scale


UNARY: dict[str, Callable[[nd.Variable], nd.Variable]] = {
    "negative": lambda a: -a,
    "tanh": nd.tanh,
    "sin": nd.sin,
    "arctan": nd.arctan,
    "sigmoid": nd.sigmoid,
    "softplus": nd.softplus,
    "exp": lambda a: nd.exp(squash(a)),
    "sqrt": lambda a: nd.sqrt(1.0 + a * a),
    "square": lambda a: nd.square(squash(a)),
    "log1p": lambda a: nd.log1p(a * a),
    # the forms the stability pass rewrites
    "log_one_plus_square": lambda a: nd.log(1.0 + a * a),
    "exp_minus_one": lambda a: nd.exp(squash(a)) - 1.0,
    "log_one_plus_exp": lambda a: nd.log(1.0 + nd.exp(squash(a))),
    "log1p_exp": lambda a: nd.log1p(nd.exp(squash(a))),
    "log_sigmoid": lambda a: nd.log(nd.sigmoid(squash(a))),
    "log_one_minus_sigmoid": lambda a: nd.log(1.0 - nd.sigmoid(squash(a))),
    "sigmoid_by_hand": lambda a: 1.0 / (1.0 + nd.exp(-squash(a))),
}
BINARY: dict[str, Callable[[nd.Variable, nd.Variable], nd.Variable]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "divide": lambda a, b: a / (1.0 + b * b),
    "log_exp_plus_exp": lambda a, b: nd.log(nd.exp(squash(a)) + nd.exp(squash(b))),
}
REDUCE: dict[str, Callable[[nd.Variable, Any, bool], nd.Variable]] = {
    "sum": lambda a, axis, keepdims: nd.sum(a, axis=axis, keepdims=keepdims),
    "mean": lambda a, axis, keepdims: nd.mean(a, axis=axis, keepdims=keepdims),
    "logsumexp": lambda a, axis, keepdims: nd.logsumexp(a, axis=axis, keepdims=keepdims),
    "log_sum_exp": lambda a, axis, keepdims: nd.log(nd.sum(nd.exp(squash(a)), axis=axis, keepdims=keepdims)),
    "log_softmax_by_hand": lambda a, axis, keepdims: nd.log(nd.softmax(squash(a), axis=axis)),
}
KINDS = {"unary": UNARY, "binary": BINARY, "reduce": REDUCE}
STABILITY_FORMS = [("unary", name) for name in list(UNARY)[list(UNARY).index("log_one_plus_square") :]] + [
    ("binary", "log_exp_plus_exp"),
    ("reduce", "log_sum_exp"),
    ("reduce", "log_softmax_by_hand"),
]


@dataclass(frozen=True)
class Step:
    """One formula applied to earlier values (indices: inputs first, then each step's result)."""

    kind: str
    name: str
    operands: tuple[int, ...]
    axis: Any = None
    keepdims: bool = False


def run(program: list[Step], inputs: list[nd.Variable]) -> nd.Variable:
    """Build ``program`` on ``inputs`` and return the last value."""
    values = list(inputs)
    for step in program:
        formula = KINDS[step.kind][step.name]
        args = [values[i] for i in step.operands]
        if step.kind == "reduce":
            values.append(formula(*args, step.axis, step.keepdims))
        else:
            values.append(formula(*args))
    return values[-1]


@st.composite
def programs(draw) -> tuple[list[np.ndarray], list[Step]]:
    """Input arrays and a random program over them (shapes read from a static-shaped build while drawing)."""
    elements = st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False)
    inputs = [draw(hnp.arrays(np.float64, shape, elements=elements)) for shape in draw(input_shapes())]
    values = [nd.tensor(f"x{i}", shape=a.shape) for i, a in enumerate(inputs)]
    program: list[Step] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "reduce"]))
        latest = draw(st.booleans())  # chain onto the latest value half the time, so graphs grow deep
        first = len(values) - 1 if latest else draw(st.integers(0, len(values) - 1))
        name = draw(st.sampled_from(sorted(KINDS[kind])))
        if kind == "binary":
            partners = [i for i, v in enumerate(values) if broadcastable(values[first].shape, v.shape)]
            step = Step(kind, name, (first, draw(st.sampled_from(partners))))
        elif kind == "reduce":
            step = Step(kind, name, (first,), draw(axes_for(values[first].ndim)), draw(st.booleans()))
        else:
            step = Step(kind, name, (first,))
        program.append(step)
        values.append(run([step], values))
    return inputs, program


def value_and_gradients(program: list[Step], inputs: list[np.ndarray], static_shapes: bool):
    """Input variables and the outputs ``[y, grad(sum(y), x0), ...]`` of ``program`` (unused inputs get zeros)."""
    variables = [nd.tensor(f"x{i}", shape=a.shape if static_shapes else (None,) * a.ndim) for i, a in enumerate(inputs)]
    y = run(program, variables)
    return variables, [y, *nd.grad(nd.sum(y), variables, disconnected="zero")]


def check_rewritten_matches_written(variables, outputs, inputs) -> Any:
    """Build both functions with the verifier on, re-verify each pass's graph, compare results; return the function."""
    with nd.config.option_context(debug=True):  # the pipeline verifies after every pass
        written = nd.function(variables, outputs, rewrites=False)
        rewritten = nd.function(variables, outputs)
    for record in rewritten.history:
        verify(record.after, after=record.name)
    verify(rewritten.graph)
    expected, actual = written(*inputs), rewritten(*inputs)
    for want, got, var in zip(expected, actual, outputs):
        assert got.dtype == want.dtype and got.shape == want.shape, var
        scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * scale)
    return rewritten


@settings(max_examples=200)  # the rest from the "ci" profile (tests/conftest.py); about 3 s
@given(programs(), st.booleans())
def test_rewritten_graph_and_gradient_equal_the_written_ones(case, static_shapes):
    inputs, program = case
    variables, outputs = value_and_gradients(program, inputs, static_shapes)
    check_rewritten_matches_written(variables, outputs, inputs)


def test_every_stability_form_in_the_draw_is_rewritten_and_stays_equal():
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-2.0, 2.0, size=(2, 3)), rng.uniform(-2.0, 2.0, size=(3,))]
    for kind, name in STABILITY_FORMS:
        operands = (0, 1) if kind == "binary" else (0,)
        program = [Step(kind, name, operands, axis=-1 if kind == "reduce" else None)]
        variables, outputs = value_and_gradients(program, inputs, static_shapes=False)
        f = check_rewritten_matches_written(variables, outputs, inputs)
        fired = [firing.rule for record in f.history if record.name == "stability" for firing in record.firings]
        assert fired, f"no stability rule fired for {name}"
