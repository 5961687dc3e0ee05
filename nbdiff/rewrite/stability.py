"""Numerical stability: formulas that overflow or lose every digit become the ops that compute them stably.

**Values.** ``log(1 + x)`` becomes ``log1p(x)``, ``exp(x) - 1`` becomes ``expm1(x)``, ``log(1 + exp(x))`` becomes
``softplus(x)``, ``log(sum(exp(x)))`` becomes ``logsumexp(x)``, ``log(sigmoid(x))`` becomes ``-softplus(-x)``,
``log(softmax(x))`` becomes ``log_softmax(x)``, plus their companions (``log(1 - sigmoid(x))``, ``log1p(-sigmoid)``,
``log(exp(a) + exp(b))``, ``c / (1 + exp(x))``, ``x - logsumexp(x, keepdims=True)``). Each rule is a small
function whose docstring is its identity.

**Gradients.** ``nd.grad`` runs before rewriting, so a gradient graph holds the pullbacks of the *unstable* ops:
for ``log(1 + exp(x))`` it computes ``g * (1 / (1 + exp(x))) * exp(x)``, which is ``0 * inf = nan`` at x = 1000
even after the forward became ``softplus(x)``. Nothing links a gradient node back to the forward node it
differentiates (only provenance text), so the gradient cannot be re-derived from the stable form afterwards.
Instead this pass rewrites the expressions that nbdiff's pullbacks actually produce. An elementwise pullback
multiplies the incoming gradient by the op's partial derivative, so a chain of pullbacks is a *product*; the
product rules read each ``mul`` as a flat list of factors (looking through nested ``mul`` and ``negative``, and
through ``broadcast_like`` / ``sum_to_like`` that provably keep the shape) and replace a pair of factors whose
product has a stable closed form:

====================================================  ==========================  ===============================
pair of factors                                       becomes                     fixes the gradient of
====================================================  ==========================  ===============================
``a * (c / a)``                                       ``c``                       log(sigmoid), log(softmax),
                                                                                  log(1 - sigmoid), log1p(-sigmoid)
``(c1 / a1 + c2 / a2) * a1 * a2``                     ``c1 * a2 + c2 * a1``       y log(sigmoid) + (1 - y)
                                                                                  log(1 - sigmoid)
``exp(x) * sigmoid(-x)``                              ``sigmoid(x)``              log(1 + exp), log1p(exp),
                                                                                  1 / (1 + exp(-x))
``exp(a) * (c / (exp(a) + exp(b)))``                  ``c * sigmoid(a - b)``      log(exp(a) + exp(b))
``exp(x) * restore(g * c / sum(exp(x), axis))``       ``restore(g * c) *          log(sum(exp(x), axis))
                                                      softmax(x, axis)``
====================================================  ==========================  ===============================

where ``restore`` is the ``expand_dims`` / ``broadcast_like`` a sum's pullback wraps around its gradient. A factor
also pairs with one inside ``sum_to_like(p, like)`` when it has like's shape (it is constant along the summed axes,
so it moves inside): that is how the pullbacks of broadcasting ops like ``exp(a) + exp(b)`` meet. The
reciprocal ``c / (1 + exp(x))`` (from the pullback of ``log`` or ``log1p``) first becomes ``c * sigmoid(-x)`` by a
value rule. The gradients of ``log(1 + x)`` (``1 / (1 + x)``) and ``exp(x) - 1`` (``exp(x)``) are accurate as they
are. Each identity is exact where both sides are finite; where the left side gives ``inf * 0`` the right side
gives the limit, which is the true derivative. Like Theano's canonicaliser, ``a * (c / a) -> c`` also at a = 0.

Every replacement keeps the replaced node's dtype (float32 stays float32) and its shape: rules check the
static type, and product rules prove equal run-time shapes with ``ShapeFacts`` (broadcasting the result back where
a factor that carried the shape was removed), and leave the graph alone when they cannot.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nbdiff.graph.basic import Apply, Constant, Variable, constant
from nbdiff.graph.types import is_float
from nbdiff.ops import broadcast as bc
from nbdiff.ops import elemwise as ew
from nbdiff.ops.broadcast import BroadcastLike, SumToLike
from nbdiff.ops.elemwise import Add, Elemwise, Exp, Log, Log1p, Mul, Negative, Sigmoid, Sub, TrueDivide
from nbdiff.ops.indexing import ARRAY, AddAlongAxis, Index, IndexAdd, TakeAlongAxis, getitem, take_along_axis
from nbdiff.ops.nnet import LogSoftmax, LogSoftmaxTake, LogSoftmaxTakeGrad, LogSumExp, Softmax
from nbdiff.ops.reduce import Sum
from nbdiff.ops.shape import ExpandDims
from nbdiff.ops.sizes import SizedArange, static_value
from nbdiff.rewrite.engine import rule
from nbdiff.rewrite.pipeline import register_pass, rule_pass
from nbdiff.rewrite.shapes import ShapeFacts

MAX_FACTORS = 32  # products with more factors are read only this far (the rest stay grouped)


# ---------------------------------------------------------------------------------------------------------------
# Matching helpers
# ---------------------------------------------------------------------------------------------------------------
def _is(var: Variable, kind: type | tuple[type, ...]) -> bool:
    """Whether ``var`` is computed by an op of class ``kind`` (or of one of several classes)."""
    return var.owner is not None and isinstance(var.owner.op, kind)


def _arg(var: Variable, position: int = 0) -> Variable:
    return var.owner.inputs[position]


def _scalar_value(var: Variable) -> float | None:
    """The value of a one-element numeric constant, else None."""
    if isinstance(var, Constant) and var.data.size == 1 and var.dtype != "bool":
        return float(var.data.reshape(()))
    return None


def _is_one(var: Variable) -> bool:
    return _scalar_value(var) == 1.0


def _one_plus(var: Variable) -> Variable | None:
    """``u`` when ``var`` is ``1 + u`` or ``u + 1`` (any one-element constant equal to 1)."""
    if not _is(var, Add):
        return None
    a, b = var.owner.inputs
    if _is_one(a):
        return b
    if _is_one(b):
        return a
    return None


def _one_minus(var: Variable) -> Variable | None:
    """``u`` when ``var`` is ``1 - u``, ``1 + (-u)`` or ``(-u) + 1``."""
    if _is(var, Sub) and _is_one(_arg(var, 0)):
        return _arg(var, 1)
    u = _one_plus(var)
    if u is not None and _is(u, Negative):
        return _arg(u)
    return None


def _exp_arg(var: Variable | None) -> Variable | None:
    """``x`` when ``var`` is ``exp(x)``."""
    return _arg(var) if var is not None and _is(var, Exp) else None


def _sigmoid_arg(var: Variable | None) -> Variable | None:
    """``x`` when ``var`` is ``sigmoid(x)``."""
    return _arg(var) if var is not None and _is(var, Sigmoid) else None


def _negated(x: Variable) -> Variable:
    """``-x``, without a double negation."""
    return _arg(x) if _is(x, Negative) else ew.negative(x)


def _are_negations(a: Variable, b: Variable) -> bool:
    """Whether ``a`` is ``-b`` or ``b`` is ``-a``."""
    return (_is(a, Negative) and _arg(a) is b) or (_is(b, Negative) and _arg(b) is a)


def _same_key(a: Variable, b: Variable) -> bool:
    """Whether ``a`` and ``b`` are one value: the same variable, or ``1 - u`` written two ways (sub / add-negative)."""
    if a is b:
        return True
    u, v = _one_minus(a), _one_minus(b)
    return u is not None and u is v


def _same_type(new: Variable, old: Variable) -> Variable | None:
    """``new`` when it has ``old``'s dtype and static shape (the rule's identity keeps shapes), else None."""
    return new if new.type == old.type else None


def _scaled(c: Variable, x: Variable) -> Variable:
    """``c * x``, or ``x`` when ``c`` is a 0-d constant 1 that cannot change the dtype."""
    if _is_one(c) and c.ndim == 0 and c.dtype == x.dtype:
        return x
    return ew.mul(c, x)


# ---------------------------------------------------------------------------------------------------------------
# Value rules
# ---------------------------------------------------------------------------------------------------------------
@rule(Log)
def log_one_plus_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(1 + exp(x)) -> softplus(x)"""
    x = _exp_arg(_one_plus(node.inputs[0]))
    return None if x is None else _same_type(ew.softplus(x), node.out)


@rule(Log1p)
def log1p_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log1p(exp(x)) -> softplus(x)"""
    x = _exp_arg(node.inputs[0])
    return None if x is None else _same_type(ew.softplus(x), node.out)


@rule(Log)
def log_one_minus_sigmoid(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(1 - sigmoid(x)) -> -softplus(x)"""
    x = _sigmoid_arg(_one_minus(node.inputs[0]))
    return None if x is None else _same_type(ew.negative(ew.softplus(x)), node.out)


@rule(Log1p)
def log1p_minus_sigmoid(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log1p(-sigmoid(x)) -> -softplus(x)"""
    inner = node.inputs[0]
    x = _sigmoid_arg(_arg(inner)) if _is(inner, Negative) else None
    return None if x is None else _same_type(ew.negative(ew.softplus(x)), node.out)


@rule(Log)
def log_sigmoid(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(sigmoid(x)) -> -softplus(-x)"""
    x = _sigmoid_arg(node.inputs[0])
    if x is None or not is_float(x.dtype):
        return None
    return _same_type(ew.negative(ew.softplus(_negated(x))), node.out)


@rule(Log)
def log_sum_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(sum(exp(x), axis)) -> logsumexp(x, axis)"""
    total = node.inputs[0]
    if not _is(total, Sum):
        return None
    x = _exp_arg(_arg(total))
    if x is None:
        return None
    op = total.owner.op
    return _same_type(LogSumExp(op.axes, op.keepdims)(x), node.out)


@rule(Log)
def log_softmax(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(softmax(x, axis)) -> log_softmax(x, axis)"""
    s = node.inputs[0]
    if not _is(s, Softmax):
        return None
    return _same_type(LogSoftmax(s.owner.op.axes)(_arg(s)), node.out)


@rule(TakeAlongAxis)
def log_softmax_take(node: Apply, facts: ShapeFacts) -> Variable | None:
    """take_along_axis(log_softmax(x, axis), i, axis) -> log_softmax_take(x, i, axis), i of size 1 along axis"""
    y, indices = node.inputs
    axis = node.op.axis
    if axis is None or not _is(y, LogSoftmax) or y.owner.op.axes != (axis,) or indices.type.shape[axis] != 1:
        return None
    return _same_type(LogSoftmaxTake(axis)(_arg(y), indices)[0], node.out)


def _is_row_range(r: Variable) -> bool:
    """Whether ``r`` is ``arange(n)``: 0, 1, ..., n - 1 (a constant, or a ``sized_arange(0, n, 1)``)."""
    if isinstance(r, Constant):
        return r.ndim == 1 and np.array_equal(r.data, np.arange(r.data.shape[0]))
    node = r.owner
    if node is None or not isinstance(node.op, SizedArange):
        return False
    start, _, step = node.inputs
    return static_value(start) == 0 and static_value(step) == 1


def _row_labels(arr: Variable, rows: Variable, labels: Variable, items: tuple, facts: ShapeFacts) -> Variable | None:
    """``labels[:, None]`` when ``arr[rows, labels]`` picks one entry per row of matrix ``arr``: ``rows`` is
    ``arange`` of ``arr``'s row count (proved with ``ShapeFacts``) and ``labels`` an integer vector."""
    if items != (ARRAY, ARRAY) or arr.ndim != 2 or rows.ndim != 1 or labels.ndim != 1:
        return None
    if not labels.dtype.startswith(("int", "uint")) or not _is_row_range(rows):
        return None
    if facts.dims(rows) != facts.dims(arr)[:1]:
        return None  # labels of another length fail, or broadcast (length 1), alike in both forms
    return getitem(labels, (slice(None), None))


@rule(Index)
def row_labels_take(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x[arange(n), labels] -> take_along_axis(x, labels[:, None], 1)[:, 0], n being x's row count (so the
    cross-entropy pair forms from the arange-label idiom too)"""
    if len(node.inputs) != 3:
        return None
    arr, rows, labels = node.inputs
    indices = _row_labels(arr, rows, labels, node.op.items, facts)
    if indices is None:
        return None
    return _same_type(getitem(take_along_axis(arr, indices, 1), (slice(None), 0)), node.out)


@rule(IndexAdd)
def row_labels_add(node: Apply, facts: ShapeFacts) -> Variable | None:
    """index_add(x, g, arange(n), labels) -> add_along_axis(x, index_add(t, g)[:, 0], labels[:, None], 1) with
    t = take_along_axis(x, labels[:, None], 1): the pullback of the rewritten x[arange(n), labels]"""
    if len(node.inputs) != 4:
        return None
    arr, g, rows, labels = node.inputs
    indices = _row_labels(arr, rows, labels, node.op.items, facts)
    if indices is None:
        return None
    taken = take_along_axis(arr, indices, 1)
    picked = getitem(taken, (slice(None), 0))
    (g_taken, *_) = picked.owner.op.pullback(picked.owner, [g])
    (g_arr, _) = taken.owner.op.pullback(taken.owner, [g_taken])
    return _same_type(g_arr, node.out)


@rule(Log)
def log_exp_plus_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(exp(a) + exp(b)) -> maximum(a, b) + softplus(-|a - b|)"""
    total = node.inputs[0]
    if not _is(total, Add):
        return None
    a, b = (_exp_arg(v) for v in total.owner.inputs)
    if a is None or b is None or not (is_float(a.dtype) and is_float(b.dtype)):
        return None
    stable = ew.add(ew.maximum(a, b), ew.softplus(ew.negative(ew.abs(ew.sub(a, b)))))
    return _same_type(stable, node.out)


@rule(Log)
def log_one_plus(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(1 + x) -> log1p(x)"""
    x = _one_plus(node.inputs[0])
    return None if x is None else _same_type(ew.log1p(x), node.out)


@rule(Log)
def log_one_minus(node: Apply, facts: ShapeFacts) -> Variable | None:
    """log(1 - x) -> log1p(-x)"""
    inner = node.inputs[0]
    if not (_is(inner, Sub) and _is_one(_arg(inner, 0)) and is_float(_arg(inner, 1).dtype)):
        return None
    return _same_type(ew.log1p(_negated(_arg(inner, 1))), node.out)


@rule(Sub, Add)
def exp_minus_one(node: Apply, facts: ShapeFacts) -> Variable | None:
    """exp(x) - 1 -> expm1(x)"""
    a, b = node.inputs
    if isinstance(node.op, Sub):
        pairs = [(a, b, 1.0)]
    else:
        pairs = [(a, b, -1.0), (b, a, -1.0)]
    for candidate, offset, value in pairs:
        x = _exp_arg(candidate)
        if x is not None and _scalar_value(offset) == value:
            return _same_type(ew.expm1(x), node.out)
    return None


@rule(Sub)
def minus_logsumexp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """x - logsumexp(x, axis, keepdims=True) -> log_softmax(x, axis)"""
    x, lse = node.inputs
    if not (_is(lse, LogSumExp) and _arg(lse) is x and lse.owner.op.keepdims):
        return None
    return _same_type(LogSoftmax(lse.owner.op.axes)(x), node.out)


@rule(TrueDivide)
def reciprocal_one_plus_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """c / (1 + exp(x)) -> c * sigmoid(-x)"""
    c, denominator = node.inputs
    x = _exp_arg(_one_plus(denominator))
    if x is None or not is_float(x.dtype):
        return None
    return _same_type(_scaled(c, ew.sigmoid(_negated(x))), node.out)


# ---------------------------------------------------------------------------------------------------------------
# Products: how gradient chains are read, and rebuilt after a pair of factors is replaced
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Product:
    """A variable read as ``(-1 if negated) * factors[0] * factors[1] * ...`` (NumPy broadcasting)."""

    factors: tuple[Variable, ...]
    negated: bool = False


def _unwrap(var: Variable, facts: ShapeFacts) -> Variable:
    """``var`` without ``broadcast_like`` / ``sum_to_like`` steps that provably keep its shape."""
    while _is(var, (BroadcastLike, SumToLike)) and facts.same(var, _arg(var)):
        var = _arg(var)
    return var


_READINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ShapeFacts (one sweep) -> products read


def read_product(var: Variable, facts: ShapeFacts) -> Product:
    """``var`` as a flat product, looking through ``mul``, ``negative`` and shape-keeping broadcasts of its dtype.

    Readings are remembered for the sweep (``facts`` lives as long as one), since every product rule reads each
    ``mul``; the entry holds ``var`` itself, so its id cannot be reused by another variable meanwhile.
    """
    readings = _READINGS.setdefault(facts, {})
    known = readings.get(id(var))
    if known is not None and known[0] is var:
        return known[1]
    factors: list[Variable] = []
    negated = False
    pending = [var]
    while pending:
        current = _unwrap(pending.pop(), facts)
        room = len(factors) + len(pending) < MAX_FACTORS
        if room and current.dtype == var.dtype and _is(current, Mul):
            pending.extend(reversed(current.owner.inputs))
        elif room and current.dtype == var.dtype and _is(current, Negative):
            negated = not negated
            pending.append(_arg(current))
        else:
            factors.append(current)
    product = Product(tuple(factors), negated)
    readings[id(var)] = (var, product)
    return product


def build_product(product: Product, dtype: str) -> Variable:
    """The product as graph nodes, left to right; 0-d constant ones of ``dtype`` are left out."""
    factors = [f for f in product.factors if not (_is_one(f) and f.ndim == 0 and f.dtype == dtype)]
    result = factors[0] if factors else constant(1.0, dtype)
    for factor in factors[1:]:
        result = ew.mul(result, factor)
    return ew.negative(result) if product.negated else result


def _fit(new: Variable, old: Variable, facts: ShapeFacts, witnesses: Sequence[Variable]) -> Variable | None:
    """``new`` with ``old``'s run-time shape: as is, or broadcast like one of ``witnesses``; None if unprovable."""
    if new.dtype != old.dtype or new.ndim > old.ndim:
        return None
    if new.ndim == old.ndim and facts.same(new, old):
        return new
    for witness in witnesses:
        widened = bc.broadcast_like(new, witness)
        if widened.ndim == old.ndim and facts.same(widened, old):
            return widened
    return None


def _shape_source(like: Variable, facts: ShapeFacts) -> Variable:
    """A variable with ``like``'s run-time shape that costs nothing more to compute: ``x`` for ``like = exp(x)``.

    ``broadcast_like`` and ``sum_to_like`` read only the shape of their second input; pointing them past
    elementwise unary ops lets a replaced ``exp(x)`` (which may overflow) drop out of the graph.
    """
    while _is(like, Elemwise) and len(like.owner.inputs) == 1 and facts.same(like, _arg(like)):
        like = _arg(like)
    return like


PairRule = Callable[[Variable, Variable, ShapeFacts], "list[Variable] | None"]


def _rewrite_pair(node: Apply, facts: ShapeFacts, combine: PairRule, needs: tuple[type, ...]) -> Variable | None:
    """Read ``node`` as a product; where ``combine(a, b)`` rewrites two of its factors, rebuild it.

    ``needs``: op kinds of which some factor must be an output, or ``combine`` cannot apply (a quick filter).
    """
    out = node.out
    if not is_float(out.dtype):
        return None
    product = read_product(out, facts)
    factors = list(product.factors)
    if not any(_is(f, needs) for f in factors):
        return None
    for i, a in enumerate(factors):
        for j, b in enumerate(factors):
            if i == j:
                continue
            replacement = combine(a, b, facts) or _combine_through_sum_to(a, b, facts, combine)
            if replacement is None:
                continue
            rest = [f for k, f in enumerate(factors) if k not in (i, j)]
            first = min(i, j)
            rest[first:first] = replacement
            result = _fit(build_product(Product(tuple(rest), product.negated), out.dtype), out, facts, [a, b])
            if result is not None:
                return result
    return None


def _combine_through_sum_to(a: Variable, b: Variable, facts: ShapeFacts, combine: PairRule) -> list[Variable] | None:
    """Pair ``a`` with a factor inside ``b = sum_to_like(p, like)`` when ``a`` has like's shape, by
    ``a * sum_to_like(p, like) = sum_to_like(a * p, like)`` (``a`` is constant along the axes summed away).

    Gradients of broadcasting ops meet this way: ``exp(a) * sum_to_like(g / (exp(a) + exp(b)), exp(a))``.
    """
    if not _is(b, SumToLike):
        return None
    inner, like = b.owner.inputs
    if a.ndim != like.ndim or not facts.same(a, like):
        return None
    product = read_product(inner, facts)
    for position, factor in enumerate(product.factors):
        replacement = combine(a, factor, facts)
        if replacement is None:
            continue
        rest = [*product.factors[:position], *replacement, *product.factors[position + 1 :]]
        rebuilt = _fit(build_product(Product(tuple(rest), product.negated), inner.dtype), inner, facts, [factor])
        if rebuilt is not None:
            return [bc.sum_to_like(rebuilt, _shape_source(like, facts))]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Product rules (the gradient forms)
# ---------------------------------------------------------------------------------------------------------------
def _cancel(a: Variable, b: Variable, facts: ShapeFacts) -> list[Variable] | None:
    if _is(b, TrueDivide) and _same_key(a, _arg(b, 1)):
        return [_arg(b, 0)]
    return None


def _exp_sigmoid(a: Variable, b: Variable, facts: ShapeFacts) -> list[Variable] | None:
    x, w = _exp_arg(a), _sigmoid_arg(b)
    if x is None or w is None or not _are_negations(x, w):
        return None
    return [ew.sigmoid(x)]


def _exp_over_exp_sum(a: Variable, b: Variable, facts: ShapeFacts) -> list[Variable] | None:
    x = _exp_arg(a)
    if x is None or not _is(b, TrueDivide) or not _is(_arg(b, 1), Add):
        return None
    c = _arg(b, 0)
    first, second = _arg(b, 1).owner.inputs
    other = second if first is a else first if second is a else None
    y = _exp_arg(other)
    if y is None:
        return None
    return [c, ew.sigmoid(ew.sub(x, y))]


def _exp_over_sum_exp(a: Variable, b: Variable, facts: ShapeFacts) -> list[Variable] | None:
    x = _exp_arg(a)
    if x is None:
        return None
    inner, like = b, None
    if _is(inner, BroadcastLike):
        inner, like = inner.owner.inputs
    expand = None
    if _is(inner, ExpandDims):
        expand, inner = inner.owner.op, _arg(inner)
    scaled = read_product(inner, facts)
    for position, factor in enumerate(scaled.factors):
        total = _arg(factor, 1) if _is(factor, TrueDivide) else None
        if total is None or not _is(total, Sum) or _arg(total) is not a:
            continue
        op = total.owner.op
        restored = () if op.keepdims or not op.axes else op.axes
        if (expand.axes if expand is not None else ()) != restored:
            continue
        softmax = Softmax(op.axes)(x)
        rest = [*scaled.factors[:position], _arg(factor, 0), *scaled.factors[position + 1 :]]
        shape_witness = LogSumExp(op.axes, op.keepdims)(x)  # has the sum's shape, without overflowing
        scale = _fit(build_product(Product(tuple(rest), scaled.negated), inner.dtype), inner, facts, [shape_witness])
        if scale is None:
            continue
        if expand is not None:
            scale = expand(scale)
        if like is not None:
            scale = bc.broadcast_like(scale, _shape_source(like, facts))
        return [scale, softmax]
    return None


@rule(Mul)
def cancel_reciprocal(node: Apply, facts: ShapeFacts) -> Variable | None:
    """a * (c / a) -> c"""
    return _rewrite_pair(node, facts, _cancel, (TrueDivide, SumToLike))


def _cancelled(term: Variable, rest: Sequence[Variable], facts: ShapeFacts) -> Variable | None:
    """``term * rest`` with a reciprocal factor ``c / a`` of ``term`` cancelled by a factor ``a`` of ``rest``."""
    product = read_product(term, facts)
    for i, b in enumerate(product.factors):
        for j, a in enumerate(rest):
            replacement = _cancel(a, b, facts)
            if replacement is not None:
                factors = [*product.factors[:i], *replacement, *product.factors[i + 1 :], *rest[:j], *rest[j + 1 :]]
                return build_product(Product(tuple(factors), product.negated), term.dtype)
    return None


@rule(Mul)
def distribute_to_cancel(node: Apply, facts: ShapeFacts) -> Variable | None:
    """(c1 / a1 + c2 / a2) * a1 * a2 -> c1 * a2 + c2 * a1 (also with -): each term of a sum cancels a factor"""
    out = node.out
    if not is_float(out.dtype):
        return None
    product = read_product(out, facts)
    for position, factor in enumerate(product.factors):
        if not _is(factor, (Add, Sub)) or factor.dtype != out.dtype:
            continue
        rest = [f for k, f in enumerate(product.factors) if k != position]
        terms = [_cancelled(term, rest, facts) for term in factor.owner.inputs]
        if any(term is None for term in terms):
            continue
        total = (ew.add if _is(factor, Add) else ew.sub)(*terms)
        result = _fit(ew.negative(total) if product.negated else total, out, facts, [factor, *rest])
        if result is not None:
            return result
    return None


@rule(Mul)
def exp_times_sigmoid_of_negation(node: Apply, facts: ShapeFacts) -> Variable | None:
    """exp(x) * sigmoid(-x) -> sigmoid(x)"""
    return _rewrite_pair(node, facts, _exp_sigmoid, (Exp,))


@rule(Mul)
def exp_over_exp_sum(node: Apply, facts: ShapeFacts) -> Variable | None:
    """exp(a) * (c / (exp(a) + exp(b))) -> c * sigmoid(a - b)"""
    return _rewrite_pair(node, facts, _exp_over_exp_sum, (Exp,))


@rule(Mul)
def exp_over_sum_exp(node: Apply, facts: ShapeFacts) -> Variable | None:
    """exp(x) * restore(g * c / sum(exp(x), axis)) -> restore(g * c) * softmax(x, axis)"""
    return _rewrite_pair(node, facts, _exp_over_sum_exp, (Exp,))


@rule(Sub)
def log_softmax_take_gradient(node: Apply, facts: ShapeFacts) -> Variable | None:
    """a - exp(y) * sum(a, axis, keepdims) -> log_softmax_take_grad(p, i, g), where a = add_along_axis(y, g, i, axis),
    y = log_softmax(x, axis), p = softmax(x, axis) from log_softmax_take(x, i) and i has size 1 along axis (the
    pullbacks of take_along_axis and log_softmax)"""
    a, product = node.inputs
    if not _is(a, AddAlongAxis) or not _is(product, Mul) or a.owner.op.axis is None:
        return None
    axis = a.owner.op.axis
    y, g, indices = a.owner.inputs
    if indices.type.shape[axis] != 1 or not _is(y, LogSoftmax) or y.owner.op.axes != (axis,):
        return None
    for e, total in (product.owner.inputs, reversed(product.owner.inputs)):
        if _is(e, Exp) and _arg(e) is y and _is(total, Sum) and _arg(total) is a:
            if total.owner.op.axes == (axis,) and total.owner.op.keepdims:
                probabilities = LogSoftmaxTake(axis)(_arg(y), indices)[1]  # the forward rule's node: merged
                if _is(g, BroadcastLike):  # the op broadcasts g itself (a mean's 0-d seed: no (n, 1) copy)
                    g = _arg(g)
                return _same_type(LogSoftmaxTakeGrad(axis)(probabilities, indices, g), node.out)
    return None


VALUE_RULES = [
    log_one_plus_exp,  # before log_one_plus: softplus wins over log1p for log(1 + exp(x))
    log1p_exp,
    log_one_minus_sigmoid,  # before log_one_minus
    log1p_minus_sigmoid,
    log_sigmoid,
    log_sum_exp,
    log_softmax,
    row_labels_take,  # before log_softmax_take: x[arange(n), labels] becomes take_along_axis, which it reads
    log_softmax_take,
    log_exp_plus_exp,
    log_one_plus,
    log_one_minus,
    exp_minus_one,
    minus_logsumexp,
    reciprocal_one_plus_exp,
]
GRADIENT_RULES = [
    row_labels_add,
    log_softmax_take_gradient,
    cancel_reciprocal,
    distribute_to_cancel,  # after cancel_reciprocal: a sum of reciprocals (binary cross-entropy through sigmoid)
    exp_times_sigmoid_of_negation,
    exp_over_exp_sum,
    exp_over_sum_exp,
]

STABILITY = register_pass(
    rule_pass(
        "stability",
        VALUE_RULES + GRADIENT_RULES,
        "numerically stable forms of log/exp formulas and of the gradients their pullbacks build",
    )
)
