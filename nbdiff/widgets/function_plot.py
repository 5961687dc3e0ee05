"""``nd.plot(f, x=(-3, 3), a=(0, 2))``: a function of one variable drawn with its symbolic derivative.

The first keyword names the variable on the horizontal axis and its range; every other input of ``f`` is a scalar
given as ``name=(lo, hi)`` (a slider starting at the middle) or ``name=value`` (a slider starting at ``value``,
over ``value ± max(1, |value|)``). Moving a slider redraws. ``f`` is an ``nd.function`` with one output, or a
Python callable that builds the graph from scalar variables named after its parameters.

How the derivative is built (always nbdiff's own symbolic derivative, never finite differences):

- **elementwise** (the common case): every op between ``x`` and the output is elementwise. ``x`` is replaced by a
  vector holding the whole grid, so one call computes every point. The Jacobian of an elementwise function is
  diagonal, so its diagonal, ``d f(x)_i / d x_i``, is the R-op with a tangent of ones: ``nd.Rop(y, x, ones)``.
- **pointwise**: a scalar ``x`` feeding other ops (a reduction, a reshape ...): the derivative is
  ``nd.grad(y, x)`` and the function is called once per grid point.

A vector input ``x`` must be used elementwise (otherwise no single curve describes it). Drawing uses matplotlib's
Agg canvas (no pyplot, no global backend change) and shows the PNG in an ``ipywidgets.Image``; the widget's root
element has the CSS class ``nbdiff-plot``. ``FunctionPlot.curve`` holds the data last drawn.
"""

from __future__ import annotations

import inspect
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nbdiff.errors import DTypeError, InputError, ShapeError, node_error
from nbdiff.function import Function, function
from nbdiff.gradient import Rop, grad
from nbdiff.graph.basic import Apply, Variable, apply, as_variable
from nbdiff.graph.provenance import inherit
from nbdiff.graph.traversal import toposort
from nbdiff.graph.types import is_float, is_integer
from nbdiff.ops.broadcast import FillLike, ones_like
from nbdiff.ops.elemwise import Elemwise
from nbdiff.variables import scalar, vector

DEFAULT_POINTS = 200


@dataclass(frozen=True)
class Curve:
    """The data of one drawing: the grid, the value and the derivative at each grid point, the other inputs."""

    x: np.ndarray
    value: np.ndarray
    derivative: np.ndarray
    params: dict[str, float]


# -- the data model ---------------------------------------------------------------------------------------------
class CurveModel:
    """``f`` and ``df/dx`` over a grid of ``x``, for given values of the other (scalar) inputs."""

    def __init__(self, x: Variable, others: Sequence[Variable], output: Variable, label: str = "f"):
        self.x = x
        self.others = list(others)
        self.label = label
        _check_output(x, output)
        nodes = toposort([output], stop_at=[x, *self.others])
        dependent = _dependent_nodes(nodes, x)
        self.mode = "elementwise" if _elementwise(dependent, x) else "pointwise"
        if self.mode == "pointwise" and x.ndim != 0:
            raise node_error(
                ShapeError,
                "plot",
                f"{label} uses the vector {x.label()} in ops that are not elementwise; a curve needs a function "
                f"of a scalar {x.label()}, or one applied elementwise to a vector",
                [x, output],
            )
        if self.mode == "elementwise":
            grid_var = vector(x.name, x.dtype)
            value = _substitute(dependent, output, x, grid_var)
            derivative = Rop(value, grid_var, ones_like(grid_var))
            self._function = function([grid_var, *self.others], [value, derivative], name=f"plot of {label}")
        else:
            derivative = grad(output, x, disconnected="zero")
            self._function = function([x, *self.others], [output, derivative], name=f"plot of {label}")

    def evaluate(self, lo: float, hi: float, points: int, params: dict[str, float]) -> Curve:
        """The curve over ``points`` evenly spaced values of x in ``[lo, hi]``."""
        grid = np.linspace(lo, hi, points).astype(self.x.dtype)
        args = [params[v.name] for v in self.others]
        if self.mode == "elementwise":
            value, derivative = self._function(grid, *args)
        else:
            pairs = [self._function(point, *args) for point in grid]
            value, derivative = (np.array([pair[i] for pair in pairs]) for i in (0, 1))
        as_grid = [np.broadcast_to(np.asarray(a, dtype=np.float64), grid.shape) for a in (value, derivative)]
        return Curve(grid.astype(np.float64), as_grid[0], as_grid[1], dict(params))


def _check_output(x: Variable, output: Variable) -> None:
    if not is_float(x.dtype):
        raise node_error(DTypeError, "plot", f"{x.label()} must be a float variable, got {x.dtype}", [x])
    if not is_float(output.dtype):
        raise node_error(DTypeError, "plot", f"the output must be a float, got {output.dtype}", [output])
    if output.ndim != x.ndim:
        shape = "a scalar" if x.ndim == 0 else "a vector (elementwise in x)"
        raise node_error(
            ShapeError,
            "plot",
            f"the output must be {shape} like {x.label()} ({x.type}), got {output.type}",
            [x, output],
        )


def _dependent_nodes(nodes: Sequence[Apply], x: Variable) -> list[Apply]:
    """The nodes (in execution order) whose value depends on ``x``."""
    depends = {id(x)}
    result = []
    for node in nodes:
        if any(id(v) in depends for v in node.inputs):
            result.append(node)
            depends.update(id(v) for v in node.outputs)
    return result


def _elementwise(dependent: Sequence[Apply], x: Variable) -> bool:
    """True when every node depending on ``x`` is elementwise and mixes it only with scalars."""
    produced = {id(v) for node in dependent for v in node.outputs} | {id(x)}
    for node in dependent:
        if not isinstance(node.op, (Elemwise, FillLike)):
            return False
        if any(id(v) not in produced and v.ndim != 0 for v in node.inputs):
            return False
    return True


def _substitute(dependent: Sequence[Apply], output: Variable, x: Variable, replacement: Variable) -> Variable:
    """``output`` rebuilt with ``x`` replaced (each rebuilt node keeps the provenance of the one it copies)."""
    mapping = {id(x): replacement}
    for node in dependent:
        inputs = [mapping.get(id(v), v) for v in node.inputs]
        with inherit([node.provenance], "plot over a grid"):
            rebuilt = apply(node.op, inputs, node.op.infer(*inputs))
        mapping.update((id(old), new) for old, new in zip(node.outputs, rebuilt.outputs))
    return mapping.get(id(output), output)


# -- arguments ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliderSpec:
    """A slider for one scalar input: its range and starting value."""

    name: str
    lo: float
    hi: float
    value: float
    integer: bool = False


def parse_range(name: str, spec: Any) -> tuple[float, float]:
    """``(lo, hi)`` with finite ``lo < hi``, or an ``InputError``."""
    if not isinstance(spec, (tuple, list)) or len(spec) != 2 or not all(_is_number(v) for v in spec):
        raise node_error(InputError, "plot", f"{name}= must be a range (lo, hi) of two numbers, got {spec!r}")
    lo, hi = float(spec[0]), float(spec[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise node_error(InputError, "plot", f"{name}=({spec[0]}, {spec[1]}): need finite lo < hi")
    return lo, hi


def parse_slider(var: Variable, spec: Any) -> SliderSpec:
    """``name=(lo, hi)`` (starts in the middle) or ``name=value`` (over ``value ± max(1, |value|)``)."""
    name = var.name
    if var.ndim != 0:
        raise node_error(
            ShapeError, "plot", f"input {name} ({var.type}) is not a scalar; only scalar inputs get sliders", [var]
        )
    if _is_number(spec):
        value = float(spec)
        if not math.isfinite(value):
            raise node_error(InputError, "plot", f"{name}={spec!r} must be finite")
        half = max(1.0, abs(value))
        lo, hi = value - half, value + half
    else:
        lo, hi = parse_range(name, spec)
        value = (lo + hi) / 2
    integer = is_integer(var.dtype)
    if integer:
        lo, hi, value = math.ceil(lo), math.floor(hi), round(value)
    return SliderSpec(name, lo, hi, value, integer)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _inputs_of(f: Any, x_name: str) -> tuple[Variable, list[Variable], Variable, str]:
    """``(x, other inputs, output, label)`` for an ``nd.function`` or a graph-building callable."""
    if isinstance(f, Function):
        if len(f.outputs) != 1:
            raise node_error(InputError, "plot", f"needs a function with one output, got {len(f.outputs)} outputs")
        inputs, output, label = list(f.inputs), f.outputs[0], f.name or "f"
    elif callable(f):
        inputs, output, label = _trace_callable(f)
    else:
        raise node_error(InputError, "plot", f"expected an nd.function or a callable, got {type(f).__name__}")
    names = [v.name for v in inputs]
    if x_name not in names:
        raise node_error(InputError, "plot", f"{label} has no input named {x_name!r}; its inputs are {names}")
    x = inputs[names.index(x_name)]
    return x, [v for v in inputs if v is not x], output, label


def _trace_callable(f: Callable[..., Any]) -> tuple[list[Variable], Variable, str]:
    """Call ``f`` with one scalar variable per parameter; its result is the output."""
    parameters = list(inspect.signature(f).parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not parameters or any(p.kind not in plain for p in parameters):
        raise node_error(InputError, "plot", "a callable must take named positional parameters, e.g. lambda x, a: ...")
    inputs = [scalar(p.name) for p in parameters]
    label = getattr(f, "__name__", "f")
    label = "f" if label == "<lambda>" else label
    result = f(*inputs)
    if isinstance(result, (list, tuple)):
        raise node_error(InputError, "plot", f"{label} must return one variable, got {len(result)} values")
    return inputs, as_variable(result), label


# -- the widget ---------------------------------------------------------------------------------------------------
class FunctionPlot(widgets.VBox):
    """Sliders for the other inputs over an image of f and df/dx; redraws when a slider moves."""

    def __init__(self, model: CurveModel, x_range: tuple[float, float], points: int, sliders: Sequence[SliderSpec]):
        self.model = model
        self.x_range = x_range
        self.points = points
        self.sliders = {spec.name: _slider(spec) for spec in sliders}
        self.image = widgets.Image(format="png")
        self.drawing = CurveFigure(model.label, model.x.label())
        self.curve: Curve | None = None
        super().__init__([*self.sliders.values(), self.image])
        self.add_class("nbdiff-plot")
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        self.redraw()

    @property
    def values(self) -> dict[str, float]:
        """The other inputs' current values, by name."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def redraw(self) -> Curve:
        """Evaluate at the sliders' values, draw, and return the curve drawn."""
        self.curve = self.model.evaluate(*self.x_range, self.points, self.values)
        self.image.value = self.drawing.png(self.curve)
        return self.curve

    def _on_change(self, change: dict) -> None:
        self.redraw()


def _slider(spec: SliderSpec) -> widgets.Widget:
    cls = widgets.IntSlider if spec.integer else widgets.FloatSlider
    options: dict[str, Any] = {} if spec.integer else {"step": (spec.hi - spec.lo) / 100, "readout_format": ".3g"}
    return cls(value=spec.value, min=spec.lo, max=spec.hi, description=spec.name, continuous_update=True, **options)


class CurveFigure:
    """A matplotlib figure (Agg canvas, no pyplot) of a curve and its derivative, kept to redraw new data fast."""

    def __init__(self, label: str, x_label: str):
        self.figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        (self.value_line,) = self.axes.plot([], [], label=f"{label}({x_label})")
        (self.derivative_line,) = self.axes.plot([], [], linestyle="--", label=f"d{label}/d{x_label}")
        self.axes.axhline(0.0, color="#9ca3af", linewidth=0.8)
        self.axes.set_xlabel(x_label)
        self.axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: never hides data

    def png(self, curve: Curve) -> bytes:
        """Draw ``curve`` and return the figure as PNG bytes."""
        self.value_line.set_data(curve.x, curve.value)
        self.derivative_line.set_data(curve.x, curve.derivative)
        self.axes.relim()
        self.axes.autoscale_view()
        title = ", ".join(f"{name} = {value:.3g}" for name, value in curve.params.items())
        self.axes.set_title(title, fontsize=10)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()


def plot(f: Any, points: int = DEFAULT_POINTS, **ranges: Any) -> FunctionPlot:
    """Draw ``f`` and its derivative over the first keyword's range, with a slider for each other scalar input.

    ``nd.plot(f, x=(-3, 3), a=(0, 2), b=1.5)``: ``f`` is an ``nd.function`` with one output or a callable
    building the graph (``lambda x, a: nd.sin(a * x)``).
    """
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise node_error(InputError, "plot", f"points must be an int >= 2, got {points!r}")
    if not ranges:
        raise node_error(InputError, "plot", "name the variable to plot over and its range, e.g. x=(-3, 3)")
    x_name, x_spec = next(iter(ranges.items()))
    x_range = parse_range(x_name, x_spec)
    x, others, output, label = _inputs_of(f, x_name)
    given = {name: spec for name, spec in ranges.items() if name != x_name}
    names = [v.name for v in others]
    unknown = [name for name in given if name not in names]
    if unknown:
        raise node_error(InputError, "plot", f"{label} has no input named {unknown}; its inputs are {[x.name, *names]}")
    missing = [name for name in names if name not in given]
    if missing:
        raise node_error(
            InputError, "plot", f"give a value or a range for {missing}, e.g. {missing[0]}=(0, 1) or {missing[0]}=1.0"
        )
    sliders = [parse_slider(var, given[var.name]) for var in others]
    model = CurveModel(x, others, output, label)
    return FunctionPlot(model, x_range, int(points), sliders)
