"""Elementwise ops: one class per op holding its NumPy function, scalar code, dtype rule and local derivatives.

An elementwise op only states its *partials* (the local derivative of the output with respect to each input, as
graph variables); the shared pullback multiplies them by the incoming gradient and un-broadcasts, and the shared
pushforward sums partial times tangent. ``scalar_code`` is a target-neutral Python expression over the scalar
arguments ``{0}``, ``{1}``, ... that the compiled backends (Numba CPU and CUDA) emit inside their loops, so a new
elementwise op needs no backend change; ``math_name`` names the op's function in ``nbdiff.backends.vmath``, which
CPU kernels call instead (vectorisable, no libm call) unless ``math="libm"``. An op whose NumPy function raises
on some values (integer ``power`` with a negative exponent) says when in ``domain_check`` (a scalar condition
compiled kernels test) and ``domain_violation`` (the same on arrays, after NumPy raised), so both backends raise
``DomainError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from nbdiff.errors import DTypeError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable, constant
from nbdiff.graph.dims import broadcast_dims
from nbdiff.graph.types import (
    SUPPORTED_DTYPES,
    TensorType,
    as_dtype,
    broadcast_shapes,
    is_float,
    is_integer,
    numpy_result_dtype,
)
from nbdiff.ops import batching
from nbdiff.ops import broadcast as bc
from nbdiff.ops.special import erf as erf_numpy
from nbdiff.ops.special import float_dtype_for


class Elemwise(Op):
    """Base class of elementwise ops with NumPy broadcasting."""

    batch = batching.batch_broadcasting

    abstract = True
    nin: ClassVar[int]
    numpy_fn: ClassVar[Callable[..., np.ndarray]]  # the reference implementation (a ufunc or a function)
    scalar_code: ClassVar[str]  # e.g. "math.tanh({0})"; see the module docstring
    math_name: ClassVar[str | None] = None  # the op's vectorisable function in CPU kernels (nbdiff.backends.vmath)
    differentiable: ClassVar[bool] = True  # False for comparisons: their gradient is zero (disconnected)
    float_only: ClassVar[bool] = False  # True when integer inputs would be meaningless (e.g. sigmoid keeps them)

    def prepare_inputs(self, inputs: Sequence[Any]) -> list[Variable]:
        """As ``Op.prepare_inputs``; a size scalar (``x.shape[i]``) is weak as the Python int it stands for, so it
        takes the dtype of the other inputs: ``nd.sum(x) / x.shape[0]`` keeps float32 as NumPy does."""
        variables = super().prepare_inputs(inputs)
        if len(variables) < 2:
            return variables
        strong = [v.dtype for v in variables if not _is_size(v) and v.dtype != "bool"]
        if not strong:
            return variables
        target = numpy_result_dtype(np.add, *strong) if len(set(strong)) > 1 else strong[0]
        if target not in SUPPORTED_DTYPES:
            return variables
        return [Cast(target)(v) if _is_size(v) and v.dtype != target else v for v in variables]

    def infer(self, *inputs: Variable) -> list[TensorType]:
        if len(inputs) != self.nin:
            raise self.error(DTypeError, f"expected {self.nin} input(s), got {len(inputs)}", inputs)
        dtype = self.result_dtype(inputs)
        shape = broadcast_shapes(self.name, *(v.type.shape for v in inputs))
        return [TensorType(dtype, shape)]

    def result_dtype(self, inputs: Sequence[Variable]) -> str:
        """NumPy's result dtype for these inputs; a typed error where NumPy has no loop or nbdiff lacks the dtype."""
        dtypes = [v.dtype for v in inputs]
        try:
            dtype = numpy_result_dtype(type(self).numpy_fn, *dtypes)
        except (TypeError, ValueError) as exc:  # e.g. np.negative or np.sign of bool
            raise self.error(DTypeError, f"NumPy does not accept {', '.join(dtypes)} here: {exc}", inputs) from None
        if dtype not in SUPPORTED_DTYPES:
            raise self.error(
                DTypeError,
                f"NumPy's result would be {dtype}, which nbdiff does not support; cast the input first "
                f"(e.g. x.astype('float64'))",
                inputs,
            )
        return dtype

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return (np.asarray(type(self).numpy_fn(*arrays)),)

    def domain_check(self, arg_dtypes: Sequence[str], dtype: str) -> str | None:
        """A scalar condition over ``{0}``, ``{1}``, ... true where NumPy refuses the values for these argument and
        result dtypes (None: it never does). Compiled kernels test it per element and, where it holds, leave the
        step to ``perform``, which raises the interpreter's error."""
        return None

    def domain_violation(self, *arrays: np.ndarray) -> str | None:
        """Why NumPy refused these arrays' values (None: not for their values), asked after it raised a
        ``ValueError``, so that the interpreter raises ``DomainError`` rather than ``ShapeError``."""
        return None

    def symbolic_shape(self, input_dims: Sequence[tuple]) -> list[tuple]:
        """Elementwise ops broadcast their inputs' symbolic shapes."""
        return [broadcast_dims(input_dims)]

    def partials(self, node: Apply, wanted: Sequence[bool]) -> list[Variable | None]:
        """Local derivatives d(output)/d(input i) as graph variables, for each input with ``wanted[i]`` set."""
        raise NotImplementedError(f"{type(self).__name__} does not implement partials")

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Any]:
        (g,) = output_grads
        wanted = [is_float(v.dtype) and not isinstance(v, Constant) for v in node.inputs]
        if g is None or not self.differentiable or not any(wanted):
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
        broadcast = False  # whether the sum may be smaller than the output (a tangent of a broadcast input)
        for var, tangent, partial in zip(node.inputs, tangents, partials):
            if tangent is None or partial is None:
                continue
            term = _scale(tangent, partial)
            total = term if total is None else add(total, term)
            broadcast = broadcast or bc.may_be_broadcast(var, node, node.out)
        if total is None:
            return [None]
        return [bc.broadcast_like(total, node.out) if broadcast else total]


def _is_size(var: Variable) -> bool:
    """Whether ``var`` is a size scalar standing for a Python int (an output of ``shape_at``)."""
    return var.owner is not None and type(var.owner.op).__name__ == "ShapeAt"


class UnaryElemwise(Elemwise):
    abstract = True
    nin = 1


class BinaryElemwise(Elemwise):
    abstract = True
    nin = 2


def _scale(tangent: Variable, partial: Variable) -> Variable:
    """``partial * tangent``, without a multiplication when the partial is the constant 1 or -1."""
    if _is_constant_value(partial, 1.0):
        return tangent
    if _is_constant_value(partial, -1.0):
        return negative(tangent)
    return mul(partial, tangent)


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

    def partials(self, node, wanted):
        a, b = node.inputs
        return [
            true_divide(_const(1.0, _out(node)), b) if wanted[0] else None,
            negative(true_divide(_out(node), b)) if wanted[1] else None,
        ]


class Power(BinaryElemwise):
    numpy_fn = np.power
    scalar_code = "({0} ** {1})"

    def domain_check(self, arg_dtypes: Sequence[str], dtype: str) -> str | None:
        """The scalar condition under which NumPy refuses the values (integers to negative integer powers)."""
        if is_integer(dtype) and arg_dtypes[1].startswith("int"):
            return "{1} < 0"
        return None

    def domain_violation(self, base: np.ndarray, exponent: np.ndarray) -> str | None:
        """Why NumPy refuses these values, None when it does not (checked only once an error was raised)."""
        dtype = np.result_type(base, exponent)
        if dtype.kind in "iu" and np.any(np.asarray(exponent) < 0):
            return "integers to negative integer powers are not allowed"
        return None

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
    nonnegative = True
    numpy_fn = np.exp
    scalar_code = "math.exp({0})"
    math_name = "exp"

    def partials(self, node, wanted):
        return [_out(node)]


class Log(UnaryElemwise):
    numpy_fn = np.log
    scalar_code = "math.log({0})"
    math_name = "log"

    def partials(self, node, wanted):
        (x,) = node.inputs
        return [true_divide(_const(1.0, _out(node)), x)]


class Tanh(UnaryElemwise):
    numpy_fn = np.tanh
    scalar_code = "math.tanh({0})"
    math_name = "tanh"

    def partials(self, node, wanted):
        y = _out(node)
        return [sub(_const(1.0, y), mul(y, y))]


class Sin(UnaryElemwise):
    numpy_fn = np.sin
    scalar_code = "math.sin({0})"
    math_name = "sin"

    def partials(self, node, wanted):
        return [cos(node.inputs[0])]


class Cos(UnaryElemwise):
    numpy_fn = np.cos
    scalar_code = "math.cos({0})"
    math_name = "cos"

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
        return [TensorType(self.dtype, x.type.shape)]

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


def _mask(condition: Variable, like: Variable) -> Variable:
    """A boolean ``condition`` as 0/1 in ``like``'s float dtype (the derivative of a piecewise-linear op)."""
    return astype(condition, like.dtype if is_float(like.dtype) else "float64")


# ---------------------------------------------------------------------------------------------------------------
# Piecewise and power functions
# ---------------------------------------------------------------------------------------------------------------
class Abs(UnaryElemwise):
    """``abs(x)``; integers stay integers. The derivative is ``sign(x)``, so 0 at the kink."""

    nonnegative = True
    numpy_fn = np.abs
    scalar_code = "abs({0})"

    def partials(self, node, wanted):
        return [sign(node.inputs[0])]


class Sign(UnaryElemwise):
    """``sign(x)``: -1, 0 or 1 in x's dtype (NaN stays NaN). Its derivative is zero almost everywhere."""

    numpy_fn = np.sign
    scalar_code = "(1 if {0} > 0 else (-1 if {0} < 0 else {0}))"
    differentiable = False

    def partials(self, node, wanted):
        return [None]  # zero wherever it exists


class Sqrt(UnaryElemwise):
    """``sqrt(x)``; integers give floats. Derivative ``0.5 / sqrt(x)``."""

    nonnegative = True
    numpy_fn = np.sqrt
    scalar_code = "math.sqrt({0})"

    def partials(self, node, wanted):
        y = _out(node)
        return [true_divide(_const(0.5, y), y)]


class Square(UnaryElemwise):
    """``x * x``; integers stay integers."""

    nonnegative = True
    numpy_fn = np.square
    scalar_code = "({0} * {0})"

    def partials(self, node, wanted):
        (x,) = node.inputs
        return [mul(_const(2.0, _out(node)), x)]


def _relu(x: np.ndarray) -> np.ndarray:
    """``maximum(x, 0)`` in x's own dtype (a zero of that dtype, so integers and bool keep their dtype)."""
    x = np.asarray(x)
    return np.maximum(x, x.dtype.type(0))


class Relu(UnaryElemwise):
    """``maximum(x, 0)`` keeping x's dtype; the derivative is taken as 0 at 0.

    The derivative's mask reads the output (``relu(x) > 0`` is ``x > 0``), as Theano's does: the output is kept for
    the forward pass anyway, so the mask fuses into the backward kernel instead of being a second output that the
    forward kernel writes and keeps alive until the backward pass."""

    nonnegative = True
    numpy_fn = _relu
    scalar_code = "(0 if {0} < 0 else {0})"

    def partials(self, node, wanted):
        y = _out(node)
        return [_mask(greater(y, 0), y)]


# ---------------------------------------------------------------------------------------------------------------
# More transcendental functions
# ---------------------------------------------------------------------------------------------------------------
class Log1p(UnaryElemwise):
    """``log(1 + x)``, accurate for small x. Derivative ``1 / (1 + x)``."""

    numpy_fn = np.log1p
    scalar_code = "math.log1p({0})"
    math_name = "log1p"

    def partials(self, node, wanted):
        (x,) = node.inputs
        one = _const(1.0, _out(node))
        return [true_divide(one, add(one, x))]


class Expm1(UnaryElemwise):
    """``exp(x) - 1``, accurate for small x. Derivative ``expm1(x) + 1``."""

    numpy_fn = np.expm1
    scalar_code = "math.expm1({0})"
    math_name = "expm1"

    def partials(self, node, wanted):
        y = _out(node)
        return [add(y, _const(1.0, y))]


class Tan(UnaryElemwise):
    """``tan(x)``. Derivative ``1 + tan(x)**2``."""

    numpy_fn = np.tan
    scalar_code = "math.tan({0})"

    def partials(self, node, wanted):
        y = _out(node)
        return [add(_const(1.0, y), square(y))]


class Arctan(UnaryElemwise):
    """``arctan(x)``. Derivative ``1 / (1 + x**2)``."""

    numpy_fn = np.arctan
    scalar_code = "math.atan({0})"

    def partials(self, node, wanted):
        (x,) = node.inputs
        one = _const(1.0, _out(node))
        return [true_divide(one, add(one, square(x)))]


class Sinh(UnaryElemwise):
    """``sinh(x)``. Derivative ``cosh(x)``."""

    numpy_fn = np.sinh
    scalar_code = "math.sinh({0})"

    def partials(self, node, wanted):
        return [cosh(node.inputs[0])]


class Cosh(UnaryElemwise):
    """``cosh(x)``. Derivative ``sinh(x)``."""

    nonnegative = True
    numpy_fn = np.cosh
    scalar_code = "math.cosh({0})"

    def partials(self, node, wanted):
        return [sinh(node.inputs[0])]


def _as_float(x: np.ndarray) -> np.ndarray:
    """``x`` in the float dtype NumPy's float ufuncs would compute it in (integers and bool promote)."""
    return x.astype(float_dtype_for(x.dtype), copy=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: only ``exp(-|x|) <= 1`` is ever computed."""
    x = _as_float(np.asarray(x))
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow, as ``logaddexp(0, x)``."""
    return np.logaddexp(0, _as_float(np.asarray(x)))


class Sigmoid(UnaryElemwise):
    """The logistic function, stable for large ``|x|``; derivative ``y (1 - y)``."""

    nonnegative = True
    numpy_fn = _sigmoid
    scalar_code = "(1.0 / (1.0 + math.exp(-{0})) if {0} >= 0 else math.exp({0}) / (1.0 + math.exp({0})))"
    math_name = "sigmoid"

    def partials(self, node, wanted):
        y = _out(node)
        return [mul(y, sub(_const(1.0, y), y))]


class Softplus(UnaryElemwise):
    """``log(1 + exp(x))``, stable for large ``|x|``; derivative ``sigmoid(x)``."""

    nonnegative = True
    numpy_fn = _softplus
    scalar_code = "(({0} if {0} > 0 else 0.0) + math.log1p(math.exp(-abs({0}))))"
    math_name = "softplus"

    def partials(self, node, wanted):
        return [sigmoid(node.inputs[0])]


class Erf(UnaryElemwise):
    """The error function (NumPy has none: ``nbdiff.ops.special.erf``); derivative ``2/sqrt(pi) exp(-x**2)``."""

    numpy_fn = erf_numpy
    scalar_code = "math.erf({0})"
    math_name = "erf"

    def partials(self, node, wanted):
        (x,) = node.inputs
        return [mul(_const(2.0 / math.sqrt(math.pi), _out(node)), exp(negative(square(x))))]


# ---------------------------------------------------------------------------------------------------------------
# Selection: maximum, minimum, where, clip. Scalar code propagates NaN as NumPy does.
# ---------------------------------------------------------------------------------------------------------------
_MAXIMUM_CODE = "({0} if ({0} >= {1} or {0} != {0}) else {1})"
_MINIMUM_CODE = "({0} if ({0} <= {1} or {0} != {0}) else {1})"


class Maximum(BinaryElemwise):
    """Elementwise maximum; the gradient goes to the larger input, and to the first one on ties."""

    numpy_fn = np.maximum
    scalar_code = _MAXIMUM_CODE

    def partials(self, node, wanted):
        a, b = node.inputs
        y = _out(node)
        return [
            _mask(greater_equal(a, b), y) if wanted[0] else None,
            _mask(less(a, b), y) if wanted[1] else None,
        ]


class Minimum(BinaryElemwise):
    """Elementwise minimum; the gradient goes to the smaller input, and to the first one on ties."""

    numpy_fn = np.minimum
    scalar_code = _MINIMUM_CODE

    def partials(self, node, wanted):
        a, b = node.inputs
        y = _out(node)
        return [
            _mask(less_equal(a, b), y) if wanted[0] else None,
            _mask(greater(a, b), y) if wanted[1] else None,
        ]


class Where(Elemwise):
    """``where(condition, a, b)`` with broadcasting of all three; the condition gets no gradient.

    The gradients of ``a`` and ``b`` are the incoming gradient masked with ``where`` (not multiplied by 0/1),
    so an infinite or NaN gradient in the branch not taken does not leak into the other.
    """

    nin = 3
    numpy_fn = np.where
    scalar_code = "({1} if {0} else {2})"

    def prepare_inputs(self, inputs: Sequence[Any]) -> list[Variable]:
        """Python numbers in ``a``/``b`` take the other branch's dtype (NumPy's weak scalars), not the condition's."""
        if len(inputs) != 3:
            return super().prepare_inputs(inputs)
        condition, a, b = inputs
        a_var = as_variable(a, b if isinstance(b, Variable) else None)
        return [as_variable(condition), a_var, as_variable(b, a_var)]

    def partials(self, node, wanted):
        condition = node.inputs[0]
        y = _out(node)
        one, zero = _const(1.0, y), _const(0.0, y)
        return [
            None,
            where(condition, one, zero) if wanted[1] else None,
            where(condition, zero, one) if wanted[2] else None,
        ]

    def pullback(self, node, output_grads):
        (g,) = output_grads
        condition, a, b = node.inputs
        grads: list[Any] = [None]
        for var, taken in ((a, True), (b, False)):
            if g is None or not is_float(var.dtype) or isinstance(var, Constant):
                grads.append(None)
                continue
            zero = _const(0.0, g)
            masked = where(condition, g, zero) if taken else where(condition, zero, g)
            grads.append(bc.sum_to_like(masked, var, node))
        return grads

    def pushforward(self, node, tangents):
        _, ta, tb = tangents
        if ta is None and tb is None:
            return [None]
        zero = _const(0.0, node.out)
        result = where(node.inputs[0], zero if ta is None else ta, zero if tb is None else tb)
        return [bc.broadcast_like(result, node.out)]


class Clip(Elemwise):
    """``clip(x, a_min, a_max)`` = ``minimum(maximum(x, a_min), a_max)`` (NumPy's definition, also for
    ``a_min > a_max``). The gradient goes to x inside ``[a_min, a_max]`` (bounds included), to a bound where x
    is beyond it."""

    nin = 3
    numpy_fn = np.clip
    scalar_code = _MINIMUM_CODE.format(_MAXIMUM_CODE, "{2}")

    def partials(self, node, wanted):
        x, low, high = node.inputs
        y = _out(node)
        raised = maximum(x, low)
        below_high = _mask(less_equal(raised, high), y)
        return [
            mul(_mask(greater_equal(x, low), y), below_high) if wanted[0] else None,
            mul(_mask(less(x, low), y), below_high) if wanted[1] else None,
            _mask(greater(raised, high), y) if wanted[2] else None,
        ]


# ---------------------------------------------------------------------------------------------------------------
# Comparisons: boolean results, no gradient
# ---------------------------------------------------------------------------------------------------------------
class Comparison(BinaryElemwise):
    """Base class of comparisons: boolean outputs, zero (disconnected) gradient."""

    abstract = True
    differentiable = False

    def partials(self, node, wanted):
        return [None, None]  # piecewise constant: zero wherever it exists


class Less(Comparison):
    """``a < b``."""

    numpy_fn = np.less
    scalar_code = "({0} < {1})"


class LessEqual(Comparison):
    """``a <= b``."""

    numpy_fn = np.less_equal
    scalar_code = "({0} <= {1})"


class Greater(Comparison):
    """``a > b``."""

    numpy_fn = np.greater
    scalar_code = "({0} > {1})"


class GreaterEqual(Comparison):
    """``a >= b``."""

    numpy_fn = np.greater_equal
    scalar_code = "({0} >= {1})"


class Equal(Comparison):
    """``a == b``."""

    numpy_fn = np.equal
    scalar_code = "({0} == {1})"


class NotEqual(Comparison):
    """``a != b``."""

    numpy_fn = np.not_equal
    scalar_code = "({0} != {1})"


# ---------------------------------------------------------------------------------------------------------------
# Public functions (NumPy names)
# ---------------------------------------------------------------------------------------------------------------
abs = Abs()  # noqa: A001 - NumPy's name (Variable.__abs__ calls it)
absolute = abs
sign = Sign()
sqrt = Sqrt()
square = Square()
relu = Relu()
log1p = Log1p()
expm1 = Expm1()
tan = Tan()
arctan = Arctan()
sinh = Sinh()
cosh = Cosh()
sigmoid = Sigmoid()
softplus = Softplus()
erf = Erf()
maximum = Maximum()
minimum = Minimum()
less = Less()
less_equal = LessEqual()
greater = Greater()
greater_equal = GreaterEqual()
equal = Equal()
not_equal = NotEqual()
_where = Where()
_clip = Clip()


def where(condition: Any, x: Any = None, y: Any = None) -> Variable:
    """``x`` where ``condition`` is true (nonzero), else ``y``, broadcasting all three (NumPy's three-argument form)."""
    if x is None or y is None:
        inputs = [v for v in (condition, x, y) if v is not None]
        detail = (
            "where(condition) alone gives indices whose number depends on the data; pass both x and y"
            if x is None and y is None
            else "either both or neither of x and y must be given"
        )
        raise node_error(ShapeError, "where", detail, inputs)
    return _where(condition, x, y)


def clip(x: Any, a_min: Any, a_max: Any) -> Variable:
    """``x`` limited to ``[a_min, a_max]`` (NumPy's ``clip``); a bound of None means no bound on that side."""
    like = next((v for v in (x, a_min, a_max) if isinstance(v, Variable)), None)
    x = as_variable(x, like)
    low = _clip_bound(a_min, x)
    high = _clip_bound(a_max, x)
    if low is None and high is None:
        return x
    if low is None:
        return minimum(x, high)
    if high is None:
        return maximum(x, low)
    return _clip(x, low, high)


def _clip_bound(bound: Any, x: Variable) -> Any:
    """A Python-int bound beyond x's integer range is clamped to it, as NumPy 2's ``clip`` does (same result)."""
    if isinstance(bound, int) and not isinstance(bound, (bool, np.generic)) and is_integer(x.dtype):
        if x.dtype != "bool":
            info = np.iinfo(x.dtype)
            return min(max(bound, int(info.min)), int(info.max))
    return bound


__all__ = [
    "add",
    "sub",
    "subtract",
    "mul",
    "multiply",
    "true_divide",
    "divide",
    "power",
    "negative",
    "exp",
    "log",
    "tanh",
    "sin",
    "cos",
    "astype",
    "abs",
    "absolute",
    "sign",
    "sqrt",
    "square",
    "relu",
    "log1p",
    "expm1",
    "tan",
    "arctan",
    "sinh",
    "cosh",
    "sigmoid",
    "softplus",
    "erf",
    "maximum",
    "minimum",
    "where",
    "clip",
    "less",
    "less_equal",
    "greater",
    "greater_equal",
    "equal",
    "not_equal",
]
