"""Elementwise ops: one class per op holding its NumPy function, scalar code, dtype rule and local derivatives.

An elementwise op only states its *partials* (the local derivative of the output with respect to each input, as
graph variables); the shared pullback multiplies them by the incoming gradient and un-broadcasts, and the shared
pushforward sums partial times tangent. ``scalar_code`` is a target-neutral Python expression over the scalar
arguments ``{0}``, ``{1}``, ... that the compiled backends (Numba CPU and CUDA) emit inside their loops, so a new
elementwise op needs no backend change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from nbdiff.errors import DTypeError
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.types import TensorType, as_dtype, broadcast_shapes, is_float, numpy_result_dtype
from nbdiff.ops import broadcast as bc


class Elemwise(Op):
    """Base class of elementwise ops with NumPy broadcasting."""

    abstract = True
    nin: ClassVar[int]
    numpy_fn: ClassVar[Callable[..., np.ndarray]]  # the reference implementation (a ufunc or a function)
    scalar_code: ClassVar[str]  # e.g. "math.tanh({0})"; see the module docstring
    differentiable: ClassVar[bool] = True  # False for comparisons: their gradient is zero (disconnected)
    float_only: ClassVar[bool] = False  # True when integer inputs would be meaningless (e.g. sigmoid keeps them)

    def infer(self, *inputs: Variable) -> list[TensorType]:
        if len(inputs) != self.nin:
            raise self.error(DTypeError, f"expected {self.nin} input(s), got {len(inputs)}", inputs)
        dtype = numpy_result_dtype(type(self).numpy_fn, *(v.dtype for v in inputs))
        shape = broadcast_shapes(self.name, *(v.shape for v in inputs))
        return [TensorType(dtype, shape)]

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (np.asarray(type(self).numpy_fn(*arrays)),)

    def partials(self, node: Apply, wanted: Sequence[bool]) -> list[Variable | None]:
        """Local derivatives d(output)/d(input i) as graph variables, for each input with ``wanted[i]`` set."""
        raise NotImplementedError(f"{type(self).__name__} does not implement partials")

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        wanted = [is_float(v.dtype) and not isinstance(v, Constant) for v in node.inputs]
        if g is None or not self.differentiable:
            return [None] * len(node.inputs)
        partials = self.partials(node, wanted)
        grads: list[Any] = []
        for var, partial, want in zip(node.inputs, partials, wanted):
            if not want or partial is None:
                grads.append(None)
                continue
            grads.append(bc.sum_to_like(mul(g, partial), var, node))
        return grads

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list[Variable | None]:
        if not self.differentiable:
            return [None]
        wanted = [t is not None for t in tangents]
        partials = self.partials(node, wanted)
        total = None
        for tangent, partial in zip(tangents, partials):
            if tangent is None or partial is None:
                continue
            term = mul(partial, tangent)
            total = term if total is None else add(total, term)
        if total is None:
            return [None]
        return [bc.broadcast_like(total, node.out)]


class UnaryElemwise(Elemwise):
    abstract = True
    nin = 1


class BinaryElemwise(Elemwise):
    abstract = True
    nin = 2


def _out(node: Apply) -> Variable:
    return node.outputs[0]


def _const(value: float, like: Variable) -> Variable:
    """A scalar constant with ``like``'s float dtype (float32 graphs stay float32)."""
    dtype = like.dtype if is_float(like.dtype) else "float64"
    return constant(value, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------------------------
class Add(BinaryElemwise):
    numpy_fn = np.add
    scalar_code = "({0} + {1})"

    def partials(self, node, wanted):
        return [_const(1.0, _out(node)), _const(1.0, _out(node))]

    def pullback(self, node, output_grads):
        (g,) = output_grads
        if g is None:
            return [None, None]
        return [bc.sum_to_like(g, v, node) if is_float(v.dtype) else None for v in node.inputs]


class Sub(BinaryElemwise):
    numpy_fn = np.subtract
    scalar_code = "({0} - {1})"

    def partials(self, node, wanted):
        return [_const(1.0, _out(node)), _const(-1.0, _out(node))]

    def pullback(self, node, output_grads):
        (g,) = output_grads
        if g is None:
            return [None, None]
        a, b = node.inputs
        return [
            bc.sum_to_like(g, a, node) if is_float(a.dtype) else None,
            bc.sum_to_like(negative(g), b, node) if is_float(b.dtype) else None,
        ]


class Mul(BinaryElemwise):
    numpy_fn = np.multiply
    scalar_code = "({0} * {1})"

    def partials(self, node, wanted):
        a, b = node.inputs
        return [b, a]


class TrueDivide(BinaryElemwise):
    numpy_fn = np.true_divide
    scalar_code = "({0} / {1})"

    @property
    def name(self) -> str:
        return "true_divide"

    def partials(self, node, wanted):
        a, b = node.inputs
        return [
            true_divide(_const(1.0, _out(node)), b) if wanted[0] else None,
            negative(true_divide(_out(node), b)) if wanted[1] else None,
        ]


class Power(BinaryElemwise):
    numpy_fn = np.power
    scalar_code = "({0} ** {1})"

    def partials(self, node, wanted):
        base, exponent = node.inputs
        d_base = None
        if wanted[0]:
            if _is_constant_value(exponent, 2.0):
                d_base = mul(_const(2.0, _out(node)), base)
            elif _is_constant_value(exponent, 1.0):
                d_base = _const(1.0, _out(node))
            else:
                d_base = mul(exponent, power(base, sub(exponent, 1)))
        d_exponent = mul(_out(node), log(base)) if wanted[1] else None
        return [d_base, d_exponent]


class Negative(UnaryElemwise):
    numpy_fn = np.negative
    scalar_code = "(-{0})"

    def partials(self, node, wanted):
        return [_const(-1.0, _out(node))]

    def pullback(self, node, output_grads):
        (g,) = output_grads
        return [None if g is None or not is_float(node.inputs[0].dtype) else negative(g)]

    def pushforward(self, node, tangents):
        (t,) = tangents
        return [None if t is None else negative(t)]


# ---------------------------------------------------------------------------------------------------------------
# Transcendental functions
# ---------------------------------------------------------------------------------------------------------------
class Exp(UnaryElemwise):
    numpy_fn = np.exp
    scalar_code = "math.exp({0})"

    def partials(self, node, wanted):
        return [_out(node)]


class Log(UnaryElemwise):
    numpy_fn = np.log
    scalar_code = "math.log({0})"

    def partials(self, node, wanted):
        (x,) = node.inputs
        return [true_divide(_const(1.0, _out(node)), x)]


class Tanh(UnaryElemwise):
    numpy_fn = np.tanh
    scalar_code = "math.tanh({0})"

    def partials(self, node, wanted):
        y = _out(node)
        return [sub(_const(1.0, y), mul(y, y))]


class Sin(UnaryElemwise):
    numpy_fn = np.sin
    scalar_code = "math.sin({0})"

    def partials(self, node, wanted):
        return [cos(node.inputs[0])]


class Cos(UnaryElemwise):
    numpy_fn = np.cos
    scalar_code = "math.cos({0})"

    def partials(self, node, wanted):
        return [negative(sin(node.inputs[0]))]


def _is_constant_value(var: Variable, value: float) -> bool:
    return isinstance(var, Constant) and var.data.size == 1 and float(var.data.reshape(())) == value


# ---------------------------------------------------------------------------------------------------------------
# Public functions (NumPy names)
# ---------------------------------------------------------------------------------------------------------------
add = Add()
sub = Sub()
subtract = sub
mul = Mul()
multiply = mul
true_divide = TrueDivide()
divide = true_divide
power = Power()
negative = Negative()
exp = Exp()
log = Log()
tanh = Tanh()
sin = Sin()
cos = Cos()


@dataclass(frozen=True, eq=False)
class Cast(UnaryElemwise):
    """``x.astype(dtype)``: NumPy's ``astype`` (unsafe casting, as NumPy does)."""

    dtype: str

    @property
    def name(self) -> str:
        return "astype"

    def infer(self, *inputs: Variable) -> list[TensorType]:
        (x,) = inputs
        return [TensorType(self.dtype, x.shape)]

    def perform(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return (x.astype(self.dtype),)

    @property
    def scalar_code(self) -> str:  # type: ignore[override]
        return f"{self.dtype}({{0}})"

    def partials(self, node, wanted):
        return [_const(1.0, node.inputs[0])]

    def pullback(self, node, output_grads):
        (g,) = output_grads
        (x,) = node.inputs
        if g is None or not is_float(x.dtype) or not is_float(self.dtype):
            return [None]
        return [astype(g, x.dtype)]

    def pushforward(self, node, tangents):
        (t,) = tangents
        if t is None or not is_float(self.dtype):
            return [None]
        return [astype(t, self.dtype)]


def astype(x: Any, dtype: object) -> Variable:
    """``x`` converted to ``dtype``; a no-op when it already has that dtype."""
    x = as_variable(x)
    name = as_dtype(dtype)
    if name == x.dtype:
        return x
    return Cast(name)(x)

__all__ = ["add", "sub", "subtract", "mul", "multiply", "true_divide", "divide", "power", "negative", "exp", "log",
           "tanh", "sin", "cos", "astype"]
