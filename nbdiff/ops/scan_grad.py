"""Derivatives of ``Scan``: the pullback is a reverse scan of the body's ``Lop``, the pushforward a forward scan of
the body's ``Rop``. Both build ordinary ``Scan`` nodes, so they are differentiated again the same way.

Pullback of ``(c_T, ys) = scan(f, c_0, xs, invariants)``: a forward scan that also stacks the carry each step
starts from (``c_0 .. c_{T-1}``, the stored carries), then, from the last step to the first,
``(cbar, xbar_t, vbar_t) = vjp(f at (c_t, x_t, v))(cbar, ybar_t)``, summing ``vbar_t`` in a carry.
"""

from __future__ import annotations

from typing import Sequence

from nbdiff.graph.basic import Apply, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.types import is_float
from nbdiff.ops.scan import Scan


def _like(var: Variable, like: Variable) -> Variable:
    """``var`` in ``like``'s dtype (a body's carry must keep its dtype from step to step)."""
    return var if var.dtype == like.dtype else var.astype(like.dtype)


def _placeholders(variables: Sequence[Variable], suffix: str) -> list[Variable]:
    """Fresh root variables of the given variables' types, for a new body's inputs."""
    return [Variable(v.type, name=f"{v.name or 'v'}{suffix}") for v in variables]


def _stored_carries(node: Apply) -> list[Variable]:
    """The carry each step starts from, stacked: the same loop with the body's carry inputs as extra outputs."""
    op = node.op
    carries = op.body.inputs[: op.n_carry]
    body = Graph(op.body.inputs, [*op.body.outputs, *carries])
    stored = Scan(body, op.n_carry, op.n_seq, op.reverse, op.explicit_length).make_node(*node.inputs)
    return list(stored.outputs[len(op.body.outputs) :])


def scan_pullback(node: Apply, output_grads: Sequence[Variable | None]) -> list[Variable | None]:
    """Gradients of a scan's inputs: a reverse scan over the stored carries of the body's vector-Jacobian product."""
    from nbdiff.gradient import Lop
    from nbdiff.ops.broadcast import zeros_like

    op: Scan = node.op
    length, carries, seqs, invariants = op.split(node.inputs)
    body, n_c, n_s = op.body, op.n_carry, op.n_seq
    c_in, x_in, v_in = body.inputs[:n_c], body.inputs[n_c : n_c + n_s], body.inputs[n_c + n_s :]
    c_out, y_out = body.outputs[:n_c], body.outputs[n_c:]
    g_carry, g_ys = output_grads[:n_c], output_grads[n_c:]
    fc = [k for k, c in enumerate(carries) if is_float(c.dtype)]
    fx = [k for k, s in enumerate(seqs) if is_float(s.dtype)]
    fv = [k for k, v in enumerate(invariants) if is_float(v.dtype)]
    gy = [k for k, g in enumerate(g_ys) if g is not None and is_float(y_out[k].dtype)]
    none: list[Variable | None] = [None] * len(node.inputs)
    if not (fc or gy) or not (fc or fx or fv):
        return none
    c_bar = _placeholders([c_in[k] for k in fc], "_bar")
    v_bar = _placeholders([v_in[k] for k in fv], "_bar")
    y_bar = _placeholders([y_out[k] for k in gy], "_bar")
    wrt = [c_in[k] for k in fc] + [x_in[k] for k in fx] + [v_in[k] for k in fv]
    grads = Lop([c_out[k] for k in fc] + [y_out[k] for k in gy], wrt, c_bar + y_bar, disconnected="zero")
    grads_c, grads_x, grads_v = grads[: len(fc)], grads[len(fc) : len(fc) + len(fx)], grads[len(fc) + len(fx) :]
    new_c_bar = [_like(g, c_in[k]) for g, k in zip(grads_c, fc)]
    new_v_bar = [_like(acc + g, v_in[k]) for acc, g, k in zip(v_bar, grads_v, fv)]
    back_body = Graph(
        [*c_bar, *v_bar, *c_in, *x_in, *y_bar, *v_in],
        [*new_c_bar, *new_v_bar, *(_like(g, x_in[k]) for g, k in zip(grads_x, fx))],
    )
    init = [g_carry[k] if g_carry[k] is not None else zeros_like(carries[k]) for k in fc]
    init += [zeros_like(invariants[k]) for k in fv]
    sequences = [*_stored_carries(node), *seqs, *(g_ys[k] for k in gy)]
    back_op = Scan(back_body, len(fc) + len(fv), n_c + n_s + len(gy), not op.reverse, op.explicit_length)
    prefix = [length] if op.explicit_length else []
    back = back_op.make_node(*prefix, *init, *sequences, *invariants).outputs
    start = 1 if op.explicit_length else 0
    result = list(none)
    for i, k in enumerate(fc):
        result[start + k] = back[i]
    for i, k in enumerate(fv):
        result[start + n_c + n_s + k] = back[len(fc) + i]
    for i, k in enumerate(fx):
        result[start + n_c + k] = back[len(fc) + len(fv) + i]
    return result


def scan_pushforward(node: Apply, tangents: Sequence[Variable | None]) -> list[Variable | None]:
    """Tangents of a scan's outputs: one forward scan carrying the primal and its tangent through the body's Rop."""
    from nbdiff.gradient import Rop
    from nbdiff.ops.broadcast import zeros_like

    op: Scan = node.op
    length, carries, seqs, invariants = op.split(node.inputs)
    _, t_carry, t_seq, t_inv = op.split(tangents)
    body, n_c, n_s, n_y = op.body, op.n_carry, op.n_seq, op.n_ys
    c_in, x_in, v_in = body.inputs[:n_c], body.inputs[n_c : n_c + n_s], body.inputs[n_c + n_s :]
    c_out, y_out = body.outputs[:n_c], body.outputs[n_c:]
    fc = [k for k, c in enumerate(carries) if is_float(c.dtype)]
    fx = [k for k, s in enumerate(seqs) if is_float(s.dtype) and t_seq[k] is not None]
    fv = [k for k, v in enumerate(invariants) if is_float(v.dtype) and t_inv[k] is not None]
    fy = [k for k, y in enumerate(y_out) if is_float(y.dtype)]
    result: list[Variable | None] = [None] * len(node.outputs)
    if not (any(t_carry[k] is not None for k in fc) or fx or fv):
        return result
    c_dot = _placeholders([c_in[k] for k in fc], "_dot")
    x_dot = _placeholders([x_in[k] for k in fx], "_dot")
    v_dot = _placeholders([v_in[k] for k in fv], "_dot")
    wrt = [c_in[k] for k in fc] + [x_in[k] for k in fx] + [v_in[k] for k in fv]
    outs = Rop(list(body.outputs), wrt, c_dot + x_dot + v_dot)
    jvp_body = Graph(
        [*c_in, *c_dot, *x_in, *x_dot, *v_in, *v_dot],
        [*c_out, *(_like(outs[k], c_in[k]) for k in fc), *y_out, *(_like(outs[n_c + k], y_out[k]) for k in fy)],
    )
    init = [*carries]
    init += [_like(t_carry[k], carries[k]) if t_carry[k] is not None else zeros_like(carries[k]) for k in fc]
    sequences = [*seqs, *(_like(t_seq[k], seqs[k]) for k in fx)]
    invariant_inputs = [*invariants, *(_like(t_inv[k], invariants[k]) for k in fv)]
    jvp_op = Scan(jvp_body, n_c + len(fc), n_s + len(fx), op.reverse, op.explicit_length)
    prefix = [length] if op.explicit_length else []
    jvp = jvp_op.make_node(*prefix, *init, *sequences, *invariant_inputs).outputs
    for i, k in enumerate(fc):
        result[k] = jvp[n_c + i]
    for i, k in enumerate(fy):
        result[n_c + k] = jvp[n_c + len(fc) + n_y + i]
    return result
