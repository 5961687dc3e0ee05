"""Property tests: hypothesis builds random graphs of elementwise ops, broadcasting and reductions.

A graph is drawn as a *program*: a list of steps, each applying an op from ``UNARY``, ``BINARY`` or ``REDUCE`` to
earlier values. The same program runs on nbdiff variables (``nd``) and on NumPy arrays (``NP``, a namespace with
nbdiff's names), so every graph has a NumPy twin built in parallel. Two properties are checked: the interpreter
agrees with NumPy (values, dtype, and the static shape it inferred), and ``nd.check_grads`` passes in both modes.
Ops with a restricted domain or fast growth see their argument made safe (``log(1 + a*a)``, ``exp(tanh(a))``), so
every drawn graph is smooth where it is evaluated. Ops not yet in nbdiff are left out of the draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nbdiff as nd


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logsumexp(x, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _erf(x):
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(x)


# NumPy under nbdiff's names, so one program text builds both graphs.
NP = SimpleNamespace(
    **{name: getattr(np, name) for name in ("exp", "expm1", "log", "log1p", "sqrt", "square", "sin", "cos", "tan")},
    **{name: getattr(np, name) for name in ("tanh", "sinh", "cosh", "arctan", "negative", "power", "sum", "mean")},
    sigmoid=_sigmoid,
    softplus=_softplus,
    erf=_erf,
    logsumexp=_logsumexp,
)

Unary = Callable[[Any, Any], Any]  # (namespace, a) -> result
Binary = Callable[[Any, Any, Any], Any]  # (namespace, a, b) -> result

# name -> expression over a namespace ``M`` (nd or NP); the name must exist on nd for the op to be drawn.
UNARY: dict[str, Unary] = {
    "negative": lambda M, a: M.negative(a),
    "tanh": lambda M, a: M.tanh(a),
    "sin": lambda M, a: M.sin(a),
    "cos": lambda M, a: M.cos(a),
    "arctan": lambda M, a: M.arctan(a),
    "sigmoid": lambda M, a: M.sigmoid(a),
    "softplus": lambda M, a: M.softplus(a),
    "erf": lambda M, a: M.erf(a),
    "exp": lambda M, a: M.exp(M.tanh(a)),  # grows fast: squash its argument
    "expm1": lambda M, a: M.expm1(M.tanh(a)),
    "sinh": lambda M, a: M.sinh(M.tanh(a)),
    "cosh": lambda M, a: M.cosh(M.tanh(a)),
    "square": lambda M, a: M.square(M.tanh(a) * 2.0),
    "tan": lambda M, a: M.tan(M.tanh(a) * 0.7),  # away from the poles
    "log": lambda M, a: M.log(1.0 + a * a),  # positive arguments only
    "sqrt": lambda M, a: M.sqrt(1.0 + a * a),
    "log1p": lambda M, a: M.log1p(a * a),
    "power": lambda M, a: M.power(a, 3.0),
}
BINARY: dict[str, Binary] = {
    "add": lambda M, a, b: a + b,
    "sub": lambda M, a, b: a - b,
    "mul": lambda M, a, b: a * b,
    "true_divide": lambda M, a, b: a / (1.0 + b * b),  # a denominator that is never near zero
    "power": lambda M, a, b: M.power(1.0 + a * a, M.tanh(b)),  # positive base, variable exponent
}
REDUCE = ("sum", "mean", "logsumexp")


def available(names) -> list[str]:
    """The names nbdiff provides today, in a fixed order (``NP`` covers every name the tables use)."""
    return sorted(name for name in names if hasattr(nd, name))


UNARY_NAMES = available(UNARY)
BINARY_NAMES = available(BINARY)
REDUCE_NAMES = available(REDUCE)


@dataclass(frozen=True)
class Step:
    """One op applied to earlier values (indices into the value list: inputs first, then each step's result)."""

    kind: str  # "unary" | "binary" | "reduce"
    name: str
    operands: tuple[int, ...]
    axis: Any = None
    keepdims: bool = False


def run(program: list[Step], M: Any, inputs: list[Any]) -> Any:
    """Apply ``program`` to ``inputs`` with namespace ``M`` (``nd`` or ``NP``) and return the last value."""
    values = list(inputs)
    for step in program:
        args = [values[i] for i in step.operands]
        if step.kind == "unary":
            values.append(UNARY[step.name](M, *args))
        elif step.kind == "binary":
            values.append(BINARY[step.name](M, *args))
        else:
            values.append(getattr(M, step.name)(*args, axis=step.axis, keepdims=step.keepdims))
    return values[-1]


def broadcastable(a: tuple, b: tuple) -> bool:
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


@st.composite
def input_shapes(draw) -> list[tuple]:
    """One to three shapes that broadcast together: each a suffix of a base shape, some dimensions set to 1."""
    base = draw(st.lists(st.sampled_from([2, 3]), min_size=0, max_size=3))
    shapes = []
    for _ in range(draw(st.integers(1, 3))):
        keep = draw(st.integers(0, len(base)))
        suffix = base[len(base) - keep :]
        shapes.append(tuple(1 if draw(st.booleans()) else d for d in suffix))
    return shapes


@st.composite
def axes_for(draw, ndim: int) -> Any:
    """An ``axis=`` argument for an operand with ``ndim`` dimensions: None, an int or a tuple (negatives too)."""
    if ndim == 0 or draw(st.booleans()):
        return None
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    signed = [a - ndim if draw(st.booleans()) else a for a in chosen]
    return signed[0] if len(signed) == 1 and draw(st.booleans()) else tuple(signed)


@st.composite
def programs(draw) -> tuple[list[np.ndarray], list[Step]]:
    """Input arrays and a random program over them (shapes tracked by running the NumPy twin while drawing)."""
    elements = st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False)
    inputs = [draw(hnp.arrays(np.float64, shape, elements=elements)) for shape in draw(input_shapes())]
    values: list[Any] = [np.asarray(a) for a in inputs]
    program: list[Step] = []
    kinds = ["unary", "binary", "binary"] + (["reduce"] if REDUCE_NAMES else [])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        latest = draw(st.booleans())  # chain onto the latest value half the time, so graphs grow deep
        first = len(values) - 1 if latest else draw(st.integers(0, len(values) - 1))
        if kind == "unary":
            step = Step(kind, draw(st.sampled_from(UNARY_NAMES)), (first,))
        elif kind == "binary":
            partners = [i for i, v in enumerate(values) if broadcastable(values[first].shape, v.shape)]
            step = Step(kind, draw(st.sampled_from(BINARY_NAMES)), (first, draw(st.sampled_from(partners))))
        else:
            axis = draw(axes_for(values[first].ndim))
            step = Step(kind, draw(st.sampled_from(REDUCE_NAMES)), (first,), axis, draw(st.booleans()))
        program.append(step)
        values.append(np.asarray(run([step], NP, values)))
    return inputs, program


@given(programs(), st.booleans())
def test_interpreter_matches_numpy_on_random_graphs(case, static_shapes):
    inputs, program = case
    variables = [nd.tensor(f"x{i}", shape=a.shape if static_shapes else (None,) * a.ndim) for i, a in enumerate(inputs)]
    out = run(program, nd, variables)
    expected = np.asarray(run(program, NP, inputs))
    result = nd.function(variables, out)(*inputs)
    assert result.dtype == expected.dtype == np.float64
    assert out.type.accepts(expected.shape), f"static type {out.type} does not accept {expected.shape}"
    if static_shapes:
        assert out.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


@given(programs())
def test_check_grads_passes_on_random_graphs(case):
    inputs, program = case
    nd.check_grads(lambda *variables: run(program, nd, list(variables)), inputs, order=1, modes=("rev", "fwd"))
