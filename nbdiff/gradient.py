"""Symbolic derivatives: ``grad``, ``Lop``, ``Rop``, ``jacobian`` and ``hessian`` build ordinary graph nodes.

The reverse walker visits only nodes between the seeds and ``wrt``, calls each op's ``pullback`` inside a
provenance transform ("pullback of tanh at f.py:3"), sums contributions and un-broadcasts. ``Rop`` walks forward
with each op's ``pushforward``; an op without one is differentiated by transposing its pullback (the double-L-op
trick), so higher order needs only ``pullback``. Everything returned is a graph variable, so derivatives compose.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence, Union

from nbdiff.errors import DisconnectedInputError, GradientError, UndefinedGradientError, node_error
from nbdiff.graph.basic import Apply, Constant, Variable, as_variable, constant
from nbdiff.graph.provenance import Derivative, differentiating
from nbdiff.graph.traversal import paused_gc, toposort
from nbdiff.graph.types import is_float
from nbdiff.rewrite.shapes import ShapeFacts


class UndefinedGrad:
    """Placeholder for a gradient that does not exist (e.g. with respect to an index); raises only when used."""

    __slots__ = ("node", "position", "reason")

    def __init__(self, node: Apply, position: int, reason: str):
        self.node = node
        self.position = position
        self.reason = reason

    def error(self) -> UndefinedGradientError:
        var = self.node.inputs[self.position]
        return node_error(
            UndefinedGradientError,
            self.node.op.name,
            f"the gradient with respect to input {self.position} ({var.label()}: {var.type}) is undefined: "
            f"{self.reason}",
            self.node.inputs,
            self.node.provenance,
        )

    def __repr__(self) -> str:
        return f"UndefinedGrad({self.node.op.name}, input {self.position})"


GradResult = Union[Variable, UndefinedGrad, None]
Disconnected = Literal["raise", "zero"]


def _as_list(value: Any) -> tuple[list[Any], bool]:
    if isinstance(value, (list, tuple)):
        return list(value), True
    return [value], False


def _where(node: Apply) -> str:
    site = node.provenance.site
    return f"{node.op.name} at {site.label}" if site is not None else node.op.name


class _Accumulator:
    """Gradient contributions per variable, summed on first read (the sum is cached)."""

    def __init__(self) -> None:
        self.parts: dict[int, list[GradResult]] = {}
        self.totals: dict[int, Variable | None] = {}

    def add(self, var: Variable, grad: GradResult) -> None:
        self.parts.setdefault(id(var), []).append(grad)

    def total(self, var: Variable) -> Variable | None:
        key = id(var)
        if key in self.totals:
            return self.totals[key]
        parts = [p for p in self.parts.get(key, []) if p is not None]
        for part in parts:
            if isinstance(part, UndefinedGrad):
                raise part.error()
        result = None
        for part in parts:
            result = part if result is None else result + part
        if result is not None and result.dtype != var.dtype and is_float(var.dtype):
            result = result.astype(var.dtype)
        self.totals[key] = result
        return result


def _check_pullback_result(node: Apply, grads: Sequence[GradResult]) -> None:
    if len(grads) != len(node.inputs):
        raise GradientError(
            f"{node.op.name}: pullback returned {len(grads)} gradients for {len(node.inputs)} inputs "
            f"(a bug in the op's pullback)"
        )
    for position, (var, grad) in enumerate(zip(node.inputs, grads)):
        if isinstance(grad, Variable) and grad.ndim != var.ndim:
            raise GradientError(
                f"{node.op.name}: pullback gave a gradient of type {grad.type} for input {position} of type "
                f"{var.type} (a bug in the op's pullback)"
            )


def _walk(outputs: Sequence[Variable], wrt: Sequence[Variable]) -> tuple[list[Apply], set[int]]:
    """The nodes between ``outputs`` and ``wrt`` (inputs first) and the ids of the variables that depend on ``wrt``.

    The walk stops at each ``wrt`` variable, except at an intermediate one that another ``wrt`` variable lies above:
    in ``grad(c, [x, tanh(x)])`` the gradient of ``x`` must flow on through ``tanh(x)``.
    """
    stops = list(wrt)
    if len(wrt) > 1 and any(v.owner is not None for v in wrt):
        stops = []
        for var in wrt:
            above = {id(u) for node in toposort([var]) for u in node.inputs} if var.owner is not None else set()
            if not any(id(other) in above for other in wrt if other is not var):
                stops.append(var)
    nodes = toposort(outputs, stop_at=stops)
    relevant = {id(v) for v in wrt}
    for node in nodes:
        if any(id(v) in relevant for v in node.inputs):
            relevant.update(id(o) for o in node.outputs)
    return nodes, relevant


def backprop(seeds: Sequence[tuple[Variable, Variable]], wrt: Sequence[Variable]) -> _Accumulator:
    """Propagate ``seeds`` (variable, its gradient) back to ``wrt``; returns the accumulated contributions."""
    outputs = [var for var, _ in seeds]
    acc = _Accumulator()
    for var, seed in seeds:
        acc.add(var, seed)
    nodes, relevant = _walk(outputs, wrt)
    for node in reversed(nodes):
        if not any(id(o) in relevant for o in node.outputs) or not any(id(v) in relevant for v in node.inputs):
            continue
        output_grads = [acc.total(o) for o in node.outputs]
        if all(g is None for g in output_grads):
            continue
        with differentiating(Derivative.of("pullback", node)):
            input_grads = node.op.pullback(node, output_grads)
        _check_pullback_result(node, input_grads)
        for var, grad in zip(node.inputs, input_grads):
            if grad is not None and id(var) in relevant and is_float(var.dtype):
                acc.add(var, grad)
    return acc


def _validate_wrt(wrt: Sequence[Any], what: str) -> list[Variable]:
    result = []
    for var in wrt:
        if not isinstance(var, Variable):
            raise GradientError(f"{what}: wrt must be graph variables, got {type(var).__name__}")
        if isinstance(var, Constant):
            raise GradientError(f"{what}: cannot differentiate with respect to a constant ({var.label()})")
        result.append(var)
    return result


def _finish(
    acc: _Accumulator, outputs: Sequence[Variable], wrt: Sequence[Variable], disconnected: Disconnected, what: str
) -> list[Variable]:
    if disconnected not in ("raise", "zero"):
        raise GradientError(f"{what}: disconnected must be 'raise' or 'zero', got {disconnected!r}")
    nodes, relevant = _walk(outputs, wrt)
    upward = {id(v) for node in nodes for v in node.inputs} | {id(o) for o in outputs}
    results = []
    for var in wrt:
        if not is_float(var.dtype):
            if id(var) in upward:
                user = _first_user(outputs, wrt, var)
                detail = f"; it is used by {_where(user)}" if user is not None else ""
                raise node_error(
                    UndefinedGradientError,
                    what,
                    f"the gradient with respect to {var.label()} ({var.type}) is undefined: "
                    f"integer and boolean variables have no gradient{detail}",
                    [var],
                )
        connected = id(var) in upward and id(var) in relevant
        if not connected and disconnected == "raise":
            raise node_error(
                DisconnectedInputError,
                what,
                f"the cost does not depend on {var.label()} ({var.type}), declared at {var.provenance.describe()}; "
                f"pass disconnected='zero' to get zeros instead",
                [var],
            )
        total = acc.total(var) if connected else None
        if total is None:
            from nbdiff.ops.broadcast import zeros_like

            total = zeros_like(var, var.dtype if is_float(var.dtype) else "float64")
        elif None not in var.type.shape and total.type.shape != var.type.shape or total.ndim != var.ndim:
            from nbdiff.ops.broadcast import broadcast_like

            total = broadcast_like(total, var)
        results.append(total)
    return results


def _first_user(outputs: Sequence[Variable], wrt: Sequence[Variable], var: Variable) -> Apply | None:
    for node in toposort(outputs, stop_at=wrt):
        if any(v is var for v in node.inputs):
            return node
    return None


def grad(
    cost: Variable | None,
    wrt: Variable | Sequence[Variable],
    *,
    disconnected: Disconnected = "raise",
    known_grads: Mapping[Variable, Any] | None = None,
) -> Any:
    """Gradient of a scalar ``cost`` with respect to ``wrt`` (one variable, or a list giving a list).

    ``known_grads`` maps intermediate variables to gradients to use as extra seeds (``cost`` may then be None).
    ``disconnected="raise"`` (default) raises for a ``wrt`` the cost does not depend on; ``"zero"`` returns zeros.
    """
    wrt_list, as_list = _as_list(wrt)
    wrt_list = _validate_wrt(wrt_list, "grad")
    seeds: list[tuple[Variable, Variable]] = []
    if cost is not None:
        cost = as_variable(cost)
        if cost.ndim != 0:
            raise node_error(
                GradientError,
                "grad",
                f"the cost must be a scalar, got shape {cost.type.shape}; sum it first, or use nd.Lop / nd.jacobian",
                [cost],
            )
        if not is_float(cost.dtype):
            raise node_error(GradientError, "grad", f"the cost must be a float, got {cost.dtype}", [cost])
        seeds.append((cost, constant(1.0, cost.dtype)))
    elif not known_grads:
        raise GradientError("grad: give a cost, or known_grads, or both")
    for var, value in (known_grads or {}).items():
        seeds.append((var, _seed(var, value, "grad (known_grads)", f"the known gradient for {var.label()}")))
    outputs = [var for var, _ in seeds]
    with differentiating(Derivative("grad")), paused_gc():
        acc = backprop(seeds, wrt_list)
        results = _finish(acc, outputs, wrt_list, disconnected, "grad")
    return results if as_list else results[0]


def _seed(var: Variable, value: Any, what: str, role: str) -> Variable:
    """``value`` as the seed (or tangent) for ``var``: a float variable of ``var``'s shape (``role`` names it).

    Where the shapes are not provably equal (unknown dimensions), the seed is wrapped in ``assert_shape_like``:
    the derivative requires the equality, so it becomes a run-time check and a fact the rewrites can use.
    """
    seed = as_variable(value, var)
    if seed.ndim != var.ndim or any(
        a is not None and b is not None and a != b for a, b in zip(seed.type.shape, var.type.shape)
    ):
        raise node_error(
            GradientError,
            what,
            f"seed of type {seed.type} does not match {var.label()} of type {var.type}",
            [var, seed],
        )
    if not is_float(seed.dtype):
        seed = seed.astype(var.dtype if is_float(var.dtype) else "float64")
    if not _provably_same_shape(seed, var):
        from nbdiff.ops.broadcast import assert_shape_like

        seed = assert_shape_like(seed, var, f"{what}: {role}")
    return seed


def _provably_same_shape(seed: Variable, var: Variable) -> bool:
    """True when static or symbolic shapes prove ``seed`` has ``var``'s run-time shape.

    A leaf (an input or a constant) that is not ``var`` is taken as unproven without walking ``var``'s graph: its
    unknown sizes are its own symbols, and its static shape was compared already.
    """
    if seed is var or (None not in var.type.shape and seed.type.shape == var.type.shape):
        return True
    if seed.owner is None:
        return False
    return ShapeFacts().same(seed, var)


def Lop(
    f: Variable | Sequence[Variable],
    wrt: Variable | Sequence[Variable],
    eval_points: Variable | Sequence[Variable],
    *,
    disconnected: Disconnected = "raise",
) -> Any:
    """L-operator (vector-Jacobian product): ``sum_i eval_points[i] * d f[i] / d wrt``, as a graph."""
    outputs, _ = _as_list(f)
    points, _ = _as_list(eval_points)
    wrt_list, as_list = _as_list(wrt)
    wrt_list = _validate_wrt(wrt_list, "Lop")
    if len(points) != len(outputs):
        raise GradientError(f"Lop: got {len(points)} eval_points for {len(outputs)} outputs")
    outputs = [as_variable(o) for o in outputs]
    seeds = [
        (out, _seed(out, point, "Lop", f"the eval point for output {k} ({out.label()})"))
        for k, (out, point) in enumerate(zip(outputs, points))
    ]
    with differentiating(Derivative("Lop")), paused_gc():
        acc = backprop(seeds, wrt_list)
        results = _finish(acc, outputs, wrt_list, disconnected, "Lop")
    return results if as_list else results[0]


def Rop(
    f: Variable | Sequence[Variable],
    wrt: Variable | Sequence[Variable],
    eval_points: Variable | Sequence[Variable],
) -> Any:
    """R-operator (Jacobian-vector product): ``sum_j d f / d wrt[j] * eval_points[j]``, as a graph."""
    outputs, out_as_list = _as_list(f)
    outputs = [as_variable(o) for o in outputs]
    wrt_list, _ = _as_list(wrt)
    wrt_list = _validate_wrt(wrt_list, "Rop")
    points, _ = _as_list(eval_points)
    if len(points) != len(wrt_list):
        raise GradientError(f"Rop: got {len(points)} eval_points for {len(wrt_list)} wrt variables")
    tangents: dict[int, Variable] = {}
    for var, point in zip(wrt_list, points):
        tangents[id(var)] = _seed(var, point, "Rop", f"the tangent for {var.label()}")
    with differentiating(Derivative("Rop")), paused_gc():
        for node in toposort(outputs, stop_at=wrt_list):
            inputs = [tangents.get(id(v)) if is_float(v.dtype) else None for v in node.inputs]
            if all(t is None for t in inputs):
                continue
            with differentiating(Derivative.of("pushforward", node)):
                if node.op.pushforward is not None:
                    outs = node.op.pushforward(node, inputs)
                else:
                    outs = pushforward_by_transposition(node, inputs)
            for out, tangent in zip(node.outputs, outs):
                if tangent is not None and is_float(out.dtype):
                    tangents[id(out)] = tangent
        from nbdiff.ops.broadcast import broadcast_like, zeros_like

        results = []
        for out in outputs:
            tangent = tangents.get(id(out))
            if tangent is None:
                tangent = zeros_like(out, out.dtype if is_float(out.dtype) else "float64")
            elif tangent.ndim != out.ndim or (None not in out.type.shape and tangent.type.shape != out.type.shape):
                tangent = broadcast_like(tangent, out)  # pushforwards give output-shaped tangents; this guards
            results.append(tangent)
    return results if out_as_list else results[0]


def pushforward_by_transposition(node: Apply, tangents: Sequence[Variable | None]) -> list[Variable | None]:
    """JVP of one node from its pullback: the pullback is linear in its seed ``u``, so
    ``jvp = grad(sum_i <pullback_i(u), t_i>, u)``; ``u`` is a zeros-like placeholder whose value never matters."""
    from nbdiff.ops.broadcast import zeros_like
    from nbdiff.ops.reduce import sum as reduce_sum

    seeds = [zeros_like(out) if is_float(out.dtype) else None for out in node.outputs]
    input_grads = node.op.pullback(node, seeds)
    total = None
    for grad_i, tangent in zip(input_grads, tangents):
        if tangent is None or grad_i is None:
            continue
        if isinstance(grad_i, UndefinedGrad):
            raise grad_i.error()
        term = reduce_sum(grad_i * tangent)
        total = term if total is None else total + term
    if total is None:
        return [None] * len(node.outputs)
    used = [seed for seed in seeds if seed is not None]
    acc = backprop([(total, constant(1.0, total.dtype))], used)
    return [acc.total(seed) if seed is not None else None for seed in seeds]


JacobianMode = Literal["auto", "unroll", "reverse", "forward"]

# "auto" unrolls one gradient per element of y up to this static size. Measured (benchmarks/bench_hessian.py,
# threshold section, and the 20-op scalar expression of tests/rewrite/test_simplify_indexing.py; 2 CPUs): for a
# graph of scalars picked from x, unrolled is smaller and faster at size 4 (10 nodes, 0.44 ms against 12 nodes,
# 0.47 ms); for W1's Hessian unrolled is faster at size 1, about even at 2-4 (compiled 0.68 ms against 0.62 ms at
# 4), and slower from there (interpreted 1.1 ms against 0.30 ms at 16), while its build grows with the size
# (0.2 s at 16, 0.75 s at 64, against 0.03 s batched).
UNROLL_MAX = 4


def jacobian(
    y: Variable,
    wrt: Variable | Sequence[Variable],
    *,
    disconnected: Disconnected = "raise",
    mode: JacobianMode = "auto",
) -> Any:
    """Jacobian of ``y`` with respect to ``wrt``: shape ``y.shape + wrt.shape``, for sizes known or not.

    ``mode="reverse"`` batches the pullback over the rows of an identity of y's size (one graph, no loop, as
    JAX's ``jacrev``); ``"forward"`` batches the pushforward over the columns of an identity of wrt's size
    (``jacfwd``); ``"unroll"`` builds one gradient per element of y (a static size); ``"auto"`` unrolls for a static
    size up to ``UNROLL_MAX`` and goes reverse otherwise.
    """
    y = as_variable(y)
    wrt_list, as_list = _as_list(wrt)
    wrt_list = _validate_wrt(wrt_list, "jacobian")
    if mode not in ("auto", "unroll", "reverse", "forward"):
        raise GradientError(f"jacobian: mode must be 'auto', 'unroll', 'reverse' or 'forward', got {mode!r}")
    size = y.type.size
    if size == 0:
        raise node_error(GradientError, "jacobian", "y has no elements", [y])
    if y.ndim == 0:
        return grad(y, wrt if as_list else wrt_list[0], disconnected=disconnected)
    if mode == "unroll" or (mode == "auto" and size is not None and size <= UNROLL_MAX):
        if size is None:
            raise node_error(
                GradientError, "jacobian", f"mode='unroll' needs y of known size, got shape {y.type.shape}", [y]
            )
        results = _jacobian_unrolled(y, wrt_list, size, disconnected)
    elif mode == "forward":
        results = [_jacobian_forward(y, var, disconnected) for var in wrt_list]
    else:
        results = _jacobian_reverse(y, wrt_list, disconnected)
    return results if as_list else results[0]


def _flat(v: Variable) -> Variable:
    from nbdiff.ops.shape import reshape

    return v if v.ndim == 1 else reshape(v, (-1,))


def _unflatten(rows: Variable, y: Variable, var: Variable) -> Variable:
    """``rows`` (one row per element of y, each shaped like ``var``) as ``y.shape + var.shape``."""
    from nbdiff.ops.broadcast import broadcast_like
    from nbdiff.ops.shape import ReshapeLike, expand_dims, reshape

    if y.ndim == 1:
        return rows
    dims = (*y.type.shape, *var.type.shape)
    if dims.count(None) <= 1:
        return reshape(rows, tuple(-1 if d is None else d for d in dims))
    tail = tuple(range(y.ndim, y.ndim + var.ndim))
    like = broadcast_like(expand_dims(y, tail) if tail else y, expand_dims(var, tuple(range(y.ndim))))
    return ReshapeLike()(rows, like)  # like: y.shape + var.shape at run time, a broadcast view (no copy)


def _identity_like(flat: Variable) -> Variable:
    """The identity matrix of ``flat``'s run-time length (a diagonal of ones), the batch of unit seeds."""
    from nbdiff.ops.broadcast import ones_like
    from nbdiff.ops.shape import DiagMatrix

    return DiagMatrix(0)(ones_like(flat, flat.dtype if is_float(flat.dtype) else "float64"))


def _jacobian_unrolled(y: Variable, wrt: list[Variable], size: int, disconnected: Disconnected) -> list[Variable]:
    from nbdiff.ops.shape import stack

    flat = _flat(y)
    rows = [grad(flat[i], wrt, disconnected=disconnected) for i in range(size)]
    return [_unflatten(stack([row[k] for row in rows]), y, var) for k, var in enumerate(wrt)]


def _jacobian_reverse(y: Variable, wrt: list[Variable], disconnected: Disconnected) -> list[Variable]:
    """The pullback of a placeholder seed, batched over the rows of the identity: one graph for every row."""
    from nbdiff.variables import tensor
    from nbdiff.vmap import BatchSize, batch_graph

    flat = _flat(y)
    seed = tensor("jacobian_seed", dtype=flat.dtype if is_float(flat.dtype) else "float64", shape=flat.type.shape)
    pulled = Lop(flat, wrt, seed, disconnected=disconnected)
    eye = _identity_like(flat)
    with differentiating(Derivative("jacobian (batched pullback)")):
        rows = batch_graph(pulled, {seed: eye}, BatchSize(_identity_ruler(eye)))
    return [_unflatten(r, y, var) for r, var in zip(rows, wrt)]


def _jacobian_forward(y: Variable, var: Variable, disconnected: Disconnected) -> Variable:
    """The pushforward of a placeholder tangent, batched over the columns of the identity of ``var``'s size."""
    from nbdiff.ops.shape import ReshapeLike, transpose
    from nbdiff.variables import tensor
    from nbdiff.vmap import BatchSize, batch_graph

    flat = _flat(y)
    if disconnected == "raise" and not _connected(flat, var):
        _finish(_Accumulator(), [flat], [var], "raise", "jacobian")  # raises DisconnectedInputError
    tangent = tensor("jacobian_tangent", dtype=var.dtype if is_float(var.dtype) else "float64", shape=var.type.shape)
    pushed = Rop(flat, var, tangent)
    eye = _identity_like(_flat(var))
    by_column = BatchSize(_identity_ruler(eye))
    columns = eye if var.ndim == 1 else ReshapeLike()(eye, by_column.materialise(var))
    with differentiating(Derivative("jacobian (batched pushforward)")):
        (stacked,) = batch_graph([pushed], {tangent: columns}, by_column)
    rows = transpose(stacked)  # one row per element of y, one column per element of var
    if var.ndim != 1:
        rows = ReshapeLike()(rows, BatchSize(flat).materialise(var))
    return _unflatten(rows, y, var)


def _connected(flat: Variable, var: Variable) -> bool:
    nodes, relevant = _walk([flat], [var])
    return id(flat) in relevant


def _identity_ruler(eye: Variable) -> Variable:
    """A vector as long as the identity (its first column), the batch's ruler."""
    return eye[:, 0]


def hessian(
    cost: Variable,
    wrt: Variable | Sequence[Variable],
    *,
    disconnected: Disconnected = "raise",
    mode: JacobianMode = "auto",
) -> Any:
    """Hessian of a scalar ``cost``: for each ``wrt`` the matrix of second derivatives, shape ``wrt.shape * 2``.

    The Jacobian of the gradient (``mode`` as in ``jacobian``): for unknown sizes a batched pullback of the
    gradient graph (reverse over reverse), one graph whatever the size.
    """
    cost = as_variable(cost)
    if cost.ndim != 0:
        raise node_error(
            GradientError, "hessian", f"the cost must be a scalar, got shape {cost.type.shape}; sum it first", [cost]
        )
    wrt_list, as_list = _as_list(wrt)
    wrt_list = _validate_wrt(wrt_list, "hessian")
    results = []
    for var in wrt_list:
        g = grad(cost, var, disconnected=disconnected)
        results.append(jacobian(g, var, disconnected="zero", mode=mode))
    return results if as_list else results[0]
