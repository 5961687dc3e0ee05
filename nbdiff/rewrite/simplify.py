"""Algebraic simplification: identities such as ``x * 1 -> x``, ``-(-x) -> x`` and ``sum(sum(x, a), b) -> sum(x, ab)``.

Each rule is a small named function whose docstring is the identity it applies. A rule fires only when its result
keeps the replaced output's dtype and shape (static and symbolic, see ``simplify_gradient.can_replace``); where
dropping an operand would lose the shape the operand broadcast to, the result keeps the broadcast
(``broadcast_like``) instead. The gradient-graph rules live in ``simplify_gradient``; the pass runs both sets, with
constant folding, to a fixed point.

Choices about special values, made as PyTensor makes them:

- ``x * 0 -> 0`` also where ``x`` is infinite or NaN (IEEE arithmetic would give NaN). Gradient graphs multiply by
  zero fills, and keeping NaN there would make a zero gradient depend on values it does not depend on.
- ``exp(log(x)) -> x`` only where ``x`` is provably ``>= 0`` (``is_nonnegative``: an op class declaring
  ``nonnegative``, such as exp, abs or square, or a non-negative constant); elsewhere the written NaN for a negative
  ``x`` is kept.
- ``log(exp(x)) -> x`` is exact, and better than the original where ``exp`` overflows (``x > 709``).
- ``x + 0 -> x`` turns ``-0.0 + 0`` into ``-0.0`` rather than ``0.0`` (equal values).
"""

from __future__ import annotations

import numpy as np

from nbdiff.graph.basic import Apply, Constant, Variable, constant, is_nonnegative
from nbdiff.ops.broadcast import full_like
from nbdiff.ops.elemwise import (
    Add,
    Cast,
    Exp,
    Log,
    Mul,
    Negative,
    Power,
    Sub,
    TrueDivide,
    add,
    astype,
    negative,
    square,
    sub,
    true_divide,
)
from nbdiff.ops.reduce import Sum
from nbdiff.ops.shape import Transpose
from nbdiff.rewrite.engine import Rule, rule
from nbdiff.rewrite.fold import fold_constants, rules_then_merge
from nbdiff.rewrite.pipeline import register_pass
from nbdiff.rewrite.shapes import ShapeFacts
from nbdiff.rewrite.simplify_gradient import (
    GRADIENT_RULES,
    can_replace,
    keep_shape,
    remake,
    same_shape,
    shape_source,
    uniform_value,
)
from nbdiff.rewrite.simplify_indexing import INDEXING_RULES


# ---------------------------------------------------------------------------------------------------------------
# Neutral and absorbing operands
# ---------------------------------------------------------------------------------------------------------------
def _drop_operand(node: Apply, facts: ShapeFacts, value: float, positions: tuple[int, ...]) -> Variable | None:
    """The other operand of a binary node whose operand at one of ``positions`` is uniformly ``value``."""
    for position in positions:
        if uniform_value(node.inputs[position]) == value:
            result = keep_shape(node.inputs[1 - position], node.out, node.inputs[position], facts)
            if result is not None:
                return result
    return None


@rule(Mul)
def mul_by_one(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x * 1 -> x and 1 * x -> x (1 may be a constant or ones_like(y))"""
    return _drop_operand(node, facts, 1.0, (0, 1))


@rule(Add)
def add_zero(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x + 0 -> x and 0 + x -> x (0 may be a constant or zeros_like(y))"""
    return _drop_operand(node, facts, 0.0, (0, 1))


@rule(Sub)
def sub_zero(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x - 0 -> x"""
    return _drop_operand(node, facts, 0.0, (1,))


@rule(TrueDivide)
def div_by_one(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x / 1 -> x"""
    return _drop_operand(node, facts, 1.0, (1,))


@rule(Sub)
def zero_sub(node: Apply, facts: ShapeFacts) -> Variable | None:
    """0 - x -> -x"""
    zero, x = node.inputs
    if uniform_value(zero) != 0.0 or x.dtype != node.out.dtype or x.dtype == "bool":
        return None
    return keep_shape(negative(x), node.out, zero, facts)


@rule(Mul)
def mul_by_minus_one(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x * -1 -> -x and -1 * x -> -x"""
    for position in (0, 1):
        x = node.inputs[1 - position]
        if uniform_value(node.inputs[position]) == -1.0 and x.dtype == node.out.dtype and x.dtype != "bool":
            result = keep_shape(negative(x), node.out, node.inputs[position], facts)
            if result is not None:
                return result
    return None


@rule(Mul)
def mul_by_zero(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x * 0 -> zeros shaped like the product (also where x is inf or NaN; see the module docstring)"""
    out = node.out
    for position in (0, 1):
        zero, x = node.inputs[position], node.inputs[1 - position]
        if uniform_value(zero) != 0.0:
            continue
        if can_replace(zero, out, facts):
            return zero
        for source in (shape_source(x, facts), shape_source(zero, facts)):
            if same_shape(source, out, facts):
                return full_like(source, 0.0, None if source.dtype == out.dtype else out.dtype)
        fill = full_like(shape_source(x, facts), 0.0, out.dtype)
        result = keep_shape(fill, out, zero, facts)
        if result is not None:
            return result
    return None


# ---------------------------------------------------------------------------------------------------------------
# Inverse pairs and signs
# ---------------------------------------------------------------------------------------------------------------
def _inner(var: Variable, kind: type) -> Variable | None:
    """The input of ``var``'s one-input node when that node's op is a ``kind``."""
    node = var.owner
    if node is not None and isinstance(node.op, kind) and len(node.inputs) == 1:
        return node.inputs[0]
    return None


def _undo(node: Apply, kind: type) -> Variable | None:
    """``x`` for ``node = f(g(x))`` with g a ``kind``, when x has the output's dtype (shapes are equal)."""
    x = _inner(node.inputs[0], kind)
    if x is None or x.dtype != node.out.dtype:
        return None
    return x


@rule(Negative)
def double_negation(node: Apply, facts: ShapeFacts) -> Variable | None:
    """-(-x) -> x"""
    return _undo(node, Negative)


@rule(Exp)
def exp_of_log(node: Apply, facts: ShapeFacts) -> Variable | None:
    """exp(log(x)) -> x where x is provably >= 0 (the domain of log; where x < 0 the original gives NaN)"""
    x = _undo(node, Log)
    return x if x is not None and is_nonnegative(x) else None


@rule(Log)
def log_of_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(exp(x)) -> x"""
    return _undo(node, Exp)


@rule(Add)
def add_negative(node: Apply, facts: ShapeFacts) -> Variable | None:
    """a + (-b) -> a - b and (-a) + b -> b - a"""
    a, b = node.inputs
    for kept, negated in ((a, b), (b, a)):
        inner = _inner(negated, Negative)
        if inner is not None:
            result = remake(sub, [kept, inner], node.out, facts, dims=False)
            if result is not None:
                return result
    return None


@rule(Sub)
def sub_negative(node: Apply, facts: ShapeFacts) -> Variable | None:
    """a - (-b) -> a + b"""
    a, b = node.inputs
    inner = _inner(b, Negative)
    return None if inner is None else remake(add, [a, inner], node.out, facts, dims=False)


@rule(Mul)
def mul_by_reciprocal(node: Apply, facts: ShapeFacts) -> Variable | None:
    """a * (1 / b) -> a / b and (1 / b) * a -> a / b"""
    for position in (0, 1):
        reciprocal, a = node.inputs[position], node.inputs[1 - position]
        inner = reciprocal.owner
        if inner is None or not isinstance(inner.op, TrueDivide) or uniform_value(inner.inputs[0]) != 1.0:
            continue
        result = remake(true_divide, [a, inner.inputs[1]], node.out, facts)
        if result is not None:
            return result
    return None


@rule(Power)
def power_of_small_integer(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x ** 2 -> square(x) and x ** 1 -> x (exact; a compiled loop then multiplies instead of calling pow with an
    exponent it only learns at run time, since constants are kernel arguments)"""
    x, exponent = node.inputs
    value = uniform_value(exponent)
    if value == 2.0:
        return keep_shape(square(x), node.out, exponent, facts)
    if value == 1.0:
        return keep_shape(x, node.out, exponent, facts)
    return None


def _one_element_constant(var: Variable) -> bool:
    return isinstance(var, Constant) and var.data.size == 1


@rule(Mul)
def mul_constants(node: Apply, facts: ShapeFacts) -> Variable | None:
    """c1 * (c2 * x) -> (c1 * c2) * x for one-element constants c1, c2 (in any operand order)"""
    for position in (0, 1):
        c1, inner = node.inputs[position], node.inputs[1 - position]
        if not _one_element_constant(c1) or inner.owner is None or not isinstance(inner.owner.op, Mul):
            continue
        for inner_position in (0, 1):
            c2, x = inner.owner.inputs[inner_position], inner.owner.inputs[1 - inner_position]
            if not _one_element_constant(c2) or isinstance(x, Constant):
                continue
            with np.errstate(all="ignore"):
                product = constant(np.multiply(c1.data, c2.data))
            result = remake(node.op, [product, x], node.out, facts)
            if result is not None:
                return result
    return None


# ---------------------------------------------------------------------------------------------------------------
# Reductions, transposes, casts
# ---------------------------------------------------------------------------------------------------------------
@rule(Sum)
def sum_of_sum(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum(sum(x, a), b) -> sum(x, a + b'), b' being b's axes numbered as x's axes"""
    inner = node.inputs[0].owner
    if inner is None or not isinstance(inner.op, Sum):
        return None
    (x,) = inner.inputs
    a, keep_a = inner.op.axes, inner.op.keepdims
    b, keep_b = node.op.axes, node.op.keepdims
    remaining = [axis for axis in range(x.ndim) if keep_a or axis not in a]
    mapped = {remaining[axis] for axis in b}
    combined = tuple(sorted(set(a) | mapped))
    if keep_a == keep_b:
        keepdims = keep_a
    elif keep_a and set(a) <= mapped:
        keepdims = False  # the inner length-1 axes are all dropped by the outer sum
    else:
        return None
    result = Sum(combined, keepdims)(x)
    return result if can_replace(result, node.out, facts) else None


@rule(Sum)
def sum_no_axes(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum(x, axis=()) -> x"""
    (x,) = node.inputs
    return x if not node.op.axes and x.dtype == node.out.dtype else None


@rule(Transpose)
def transpose_of_transpose(node: Apply, facts: ShapeFacts) -> Variable | None:
    """transpose(transpose(x, p), q) -> transpose(x, p[q]), and -> x when p[q] is the identity"""
    inner = node.inputs[0].owner
    if inner is None or not isinstance(inner.op, Transpose):
        return None
    (x,) = inner.inputs
    composed = tuple(inner.op.axes[axis] for axis in node.op.axes)
    if composed == tuple(range(x.ndim)):
        return x
    return Transpose(composed)(x)


def _lossless(source: str, target: str) -> bool:
    """True when every value of dtype ``source`` is exactly representable in ``target``."""
    src, dst = np.dtype(source), np.dtype(target)
    if not np.can_cast(src, dst, "safe"):
        return False
    if src.kind in "iu" and dst.kind == "f":
        return src.itemsize * 8 <= np.finfo(dst).nmant + 1  # e.g. int64 -> float64 is "safe" but rounds
    return True


@rule(Cast)
def cast_noop(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x.astype(x.dtype) -> x"""
    (x,) = node.inputs
    return x if x.dtype == node.out.dtype else None


@rule(Cast)
def cast_of_cast(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x.astype(d1).astype(d2) -> x.astype(d2) when the cast to d1 keeps every value of x exactly"""
    middle = node.inputs[0]
    x = _inner(middle, Cast)
    if x is None or not _lossless(x.dtype, middle.dtype):
        return None
    return astype(x, node.out.dtype)


ALGEBRA_RULES: list[Rule] = [
    mul_by_one,
    add_zero,
    sub_zero,
    div_by_one,
    zero_sub,
    mul_by_minus_one,
    mul_by_zero,
    double_negation,
    exp_of_log,
    log_of_exp,
    add_negative,
    sub_negative,
    mul_by_reciprocal,
    power_of_small_integer,
    mul_constants,
    sum_of_sum,
    sum_no_axes,
    transpose_of_transpose,
    cast_noop,
    cast_of_cast,
]
SIMPLIFY_RULES: list[Rule] = [fold_constants, *GRADIENT_RULES, *INDEXING_RULES, *ALGEBRA_RULES]

SIMPLIFY = register_pass(
    rules_then_merge("simplify", SIMPLIFY_RULES, "algebraic identities and gradient-graph redundancy, to a fixed point")
)
