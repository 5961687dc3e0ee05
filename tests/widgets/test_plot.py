"""``nd.plot``: the derivative curve agrees with finite differences of the value curve, sliders change the drawn
data, and misuse raises nbdiff errors. The data model is tested, not the pixels."""

from __future__ import annotations

import struct

import ipywidgets as widgets
import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import DTypeError, InputError, ShapeError
from nbdiff.widgets.function_plot import parse_slider


def finite_differences(curve) -> np.ndarray:
    """Second-order central differences of the value curve (one-sided at the ends)."""
    return np.gradient(curve.value, curve.x, edge_order=2)


def assert_derivative_matches(curve, tolerance: float = 1e-4) -> None:
    np.testing.assert_allclose(curve.derivative, finite_differences(curve), rtol=tolerance, atol=tolerance)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def demo_function():
    x = nd.scalar("x")
    y = nd.tanh(x) ** 2 + 0.25 * x
    return nd.function([x], y, name="f")


def test_demo_function_value_and_derivative():
    f = demo_function()
    plot = nd.plot(f, x=(-3, 3), points=2001)
    assert plot.model.mode == "elementwise"
    curve = plot.curve
    assert curve.x[0] == -3 and curve.x[-1] == 3 and curve.x.shape == (2001,)
    np.testing.assert_allclose(curve.value, [f(v) for v in curve.x], rtol=1e-12)
    assert_derivative_matches(curve)


def test_widget_shows_a_png_in_an_nbdiff_plot_box():
    plot = nd.plot(demo_function(), x=(-3, 3))
    assert "nbdiff-plot" in plot._dom_classes
    assert isinstance(plot.image, widgets.Image) and plot.image in plot.children
    width, height = png_size(plot.image.value)
    assert width > 100 and height > 100
    assert plot.curve.x.shape == (200,)  # the default number of points


def test_sliders_change_the_drawn_data():
    x, a, b = nd.scalar("x"), nd.scalar("a"), nd.scalar("b")
    f = nd.function([a, x, b], nd.sin(a * x) * nd.exp(-b * x * x), name="g")
    plot = nd.plot(f, x=(-2, 2), a=(0, 4), b=0.5, points=801)
    assert list(plot.sliders) == ["a", "b"]
    assert all(isinstance(s, widgets.FloatSlider) for s in plot.sliders.values())
    assert plot.values == {"a": 2.0, "b": 0.5}  # a range starts in its middle, a value where it is given
    assert (plot.sliders["b"].min, plot.sliders["b"].max) == (-0.5, 1.5)
    first_curve, first_image = plot.curve, plot.image.value

    plot.sliders["a"].value = 3.0
    curve = plot.curve
    assert curve.params == {"a": 3.0, "b": 0.5}
    np.testing.assert_allclose(curve.value, [f(3.0, v, 0.5) for v in curve.x], rtol=1e-12)
    assert not np.allclose(curve.value, first_curve.value)
    assert plot.image.value != first_image
    assert_derivative_matches(curve, 1e-3)

    plot.sliders["b"].value = 0.0
    np.testing.assert_allclose(plot.curve.derivative, 3.0 * np.cos(3.0 * plot.curve.x), rtol=1e-12, atol=1e-12)


def test_function_that_is_not_elementwise_in_x_is_evaluated_point_by_point():
    x, a = nd.scalar("x"), nd.scalar("a")
    y = nd.sum(nd.stack([nd.sin(a * x), x**2]))
    plot = nd.plot(nd.function([x, a], y), x=(-1, 1), a=(1, 3), points=401)
    assert plot.model.mode == "pointwise"
    assert_derivative_matches(plot.curve)
    plot.sliders["a"].value = 1.0
    np.testing.assert_allclose(plot.curve.derivative, np.cos(plot.curve.x) + 2 * plot.curve.x, rtol=1e-12)


def test_vector_input_used_elementwise():
    v = nd.vector("v")
    plot = nd.plot(nd.function([v], nd.log1p(v * v) * nd.exp(-v)), v=(-2, 2), points=1001)
    assert plot.model.mode == "elementwise"
    assert_derivative_matches(plot.curve)


def test_callable_builds_the_graph():
    plot = nd.plot(lambda x, k: nd.softplus(k * x) - 0.5 * x, x=(-3, 3), k=(0.5, 2.5), points=1001)
    assert plot.model.label == "f" and list(plot.sliders) == ["k"]
    k = plot.values["k"]
    np.testing.assert_allclose(plot.curve.derivative, k / (1 + np.exp(-k * plot.curve.x)) - 0.5, rtol=1e-12)
    assert_derivative_matches(plot.curve)


def test_constant_function_has_zero_derivative():
    plot = nd.plot(lambda x: nd.constant(2.0) + 0.0, x=(0, 1), points=5)
    np.testing.assert_array_equal(plot.curve.value, np.full(5, 2.0))
    np.testing.assert_array_equal(plot.curve.derivative, np.zeros(5))


def test_float32_function():
    x = nd.scalar("x", dtype="float32")
    plot = nd.plot(nd.function([x], nd.tanh(x)), x=(-2, 2), points=401)
    assert_derivative_matches(plot.curve, 1e-3)


def test_integer_input_gets_an_integer_slider():
    x, n = nd.scalar("x"), nd.scalar("n", dtype="int64")
    plot = nd.plot(nd.function([x, n], x ** n.astype("float64")), x=(0, 2), n=(1, 4))
    assert isinstance(plot.sliders["n"], widgets.IntSlider)
    plot.sliders["n"].value = 3
    np.testing.assert_allclose(plot.curve.derivative, 3 * plot.curve.x**2, rtol=1e-12)


# -- misuse -------------------------------------------------------------------------------------------------------
def test_unknown_variable_names():
    f = demo_function()
    with pytest.raises(InputError, match=r"plot: f has no input named 't'; its inputs are \['x'\]"):
        nd.plot(f, t=(-3, 3))
    with pytest.raises(InputError, match=r"plot: f has no input named \['a'\]"):
        nd.plot(f, x=(-3, 3), a=(0, 1))


def test_missing_slider_value():
    x, a = nd.scalar("x"), nd.scalar("a")
    with pytest.raises(InputError, match=r"give a value or a range for \['a'\], e.g. a=\(0, 1\)"):
        nd.plot(nd.function([x, a], a * x), x=(-1, 1))


def test_non_scalar_output():
    x = nd.scalar("x")
    f = nd.function([x], nd.stack([x, x * x]))
    with pytest.raises(ShapeError, match=r"plot: the output must be a scalar like x \(float64\[\]\), got float64\[2\]"):
        nd.plot(f, x=(-1, 1))


def test_vector_input_reduced_to_a_scalar():
    v = nd.vector("v")
    with pytest.raises(ShapeError, match="must be a vector \\(elementwise in x\\)"):
        nd.plot(nd.function([v], nd.sum(v)), v=(-1, 1))


def test_vector_input_not_used_elementwise():
    v = nd.vector("v")
    with pytest.raises(ShapeError, match="uses the vector v in ops that are not elementwise"):
        nd.plot(nd.function([v], v - nd.mean(v)), v=(-1, 1))


def test_several_outputs():
    x = nd.scalar("x")
    with pytest.raises(InputError, match="needs a function with one output, got 2 outputs"):
        nd.plot(nd.function([x], [x, x * x]), x=(-1, 1))


def test_non_scalar_other_input():
    x, w = nd.scalar("x"), nd.vector("w")
    with pytest.raises(ShapeError, match=r"input w \(float64\[\?\]\) is not a scalar"):
        nd.plot(nd.function([x, w], nd.sum(w) * x), x=(-1, 1), w=1.0)


def test_integer_output_and_integer_x():
    x = nd.scalar("x")
    with pytest.raises(DTypeError, match="the output must be a float, got bool"):
        nd.plot(nd.function([x], x > 0), x=(-1, 1))
    i = nd.scalar("i", dtype="int64")
    with pytest.raises(DTypeError, match="i must be a float variable, got int64"):
        nd.plot(nd.function([i], i * 2), i=(0, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": (3, -3)}, r"x=\(3, -3\): need finite lo < hi"),
        ({"x": 1.0}, r"x= must be a range \(lo, hi\) of two numbers, got 1.0"),
        ({"x": (0, float("inf"))}, "need finite lo < hi"),
        ({"x": (-1, 1), "points": 1}, "points must be an int >= 2, got 1"),
        ({}, r"name the variable to plot over and its range, e.g. x=\(-3, 3\)"),
    ],
)
def test_bad_ranges(kwargs, message):
    with pytest.raises(InputError, match=message):
        nd.plot(demo_function(), **kwargs)


def test_bad_plot_targets():
    with pytest.raises(InputError, match="expected an nd.function or a callable, got str"):
        nd.plot("sin", x=(0, 1))
    with pytest.raises(InputError, match="must return one variable, got 2 values"):
        nd.plot(lambda x: (x, x), x=(0, 1))
    with pytest.raises(InputError, match="named positional parameters"):
        nd.plot(lambda *xs: xs[0], x=(0, 1))


def test_slider_specs():
    a = nd.scalar("a")
    spec = parse_slider(a, -3.0)
    assert (spec.lo, spec.hi, spec.value) == (-6.0, 0.0, -3.0)
    spec = parse_slider(a, 0)
    assert (spec.lo, spec.hi, spec.value) == (-1.0, 1.0, 0.0)
    with pytest.raises(InputError, match="a=nan must be finite"):
        parse_slider(a, float("nan"))
    with pytest.raises(InputError, match="a= must be a range"):
        parse_slider(a, (0, 1, 2))
