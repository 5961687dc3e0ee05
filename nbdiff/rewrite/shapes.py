"""Symbolic shapes: which run-time dimensions are provably equal, though their sizes are unknown.

Static types say ``None`` for a dimension known only at run time. Rewrites and fusion need more: that
``exp(x)`` and ``tanh(x)`` have the *same* unknown length, so ``broadcast_like(a, b)`` is a no-op or two
elementwise ops can share one loop. Each unknown input dimension becomes a ``Dim`` symbol; ops propagate them.
"""

from __future__ import annotations

from typing import Sequence

from nbdiff.graph.basic import Variable
from nbdiff.graph.dims import Dim, Size, fresh_dim


class ShapeFacts:
    """Symbolic shapes of the variables of a graph, computed on demand from its inputs outward.

    Op kinds propagate symbols through a ``symbolic_shape(self, input_dims)`` method when the op defines one
    (elementwise ops, reductions, the shape-following ops); any other op gives its static shape, with a fresh
    symbol for each unknown dimension.
    """

    def __init__(self, inputs: Sequence[Variable] = ()):
        self._dims: dict[int, tuple[Size, ...]] = {}
        self._sizes: dict[int, Dim] = {}  # symbols of 0-d integer variables used as sizes
        self._alive: list[object] = []  # keys are ids: keep each keyed variable alive so no id is reused
        for position, var in enumerate(inputs):
            self._dims[id(var)] = tuple(
                d if d is not None else Dim(f"{var.name or f'in{position}'}.{axis}")
                for axis, d in enumerate(var.type.shape)
            )

    def dims(self, var: Variable) -> tuple[Size, ...]:
        """The symbolic shape of ``var`` (computing its ancestors' first, without recursion)."""
        key = id(var)
        if key in self._dims:
            return self._dims[key]
        pending = [var]
        while pending:
            current = pending[-1]
            node = current.owner
            missing = [] if node is None else [v for v in node.inputs if id(v) not in self._dims]
            if missing:
                pending.extend(missing)
                continue
            pending.pop()
            if id(current) in self._dims:
                continue
            if node is None:
                self._dims[id(current)] = _static(current)
                self._alive.append(current)
                continue
            self._alive.append(node)
            inputs = [self._dims[id(v)] for v in node.inputs]
            rule = getattr(node.op, "symbolic_shape", None)
            shapes = rule(inputs) if rule is not None else None
            sized = getattr(node.op, "symbolic_shape_from_sizes", None)
            if sized is not None:
                shapes = sized(inputs, [self.size_of(v) if v.ndim == 0 else None for v in node.inputs])
                if shapes is not None:
                    shapes = [tuple(fresh_dim() if d is None else d for d in dims) for dims in shapes]
            for position, out in enumerate(node.outputs):
                dims = shapes[position] if shapes is not None else _static(out)
                # static knowledge wins over a symbol (e.g. an op that fixes a size)
                self._dims[id(out)] = (
                    tuple(s if s is not None else d for s, d in zip(out.type.shape, dims))
                    if len(dims) == out.ndim
                    else _static(out)
                )
        return self._dims[key]

    def size_of(self, var: Variable) -> Size:
        """The size a 0-d integer variable holds, symbolically: an int for a constant, ``x``'s symbol for
        ``x.shape[i]`` or ``nd.shape(x)[i]``, else a symbol of its own (the same one for every use of ``var``)."""
        from nbdiff.ops.indexing import Index
        from nbdiff.ops.sizes import Shape, ShapeAt, static_value

        known = static_value(var)
        if known is not None:
            return known
        node = var.owner
        if node is not None and isinstance(node.op, ShapeAt):
            return self.dims(node.inputs[0])[node.op.axis]
        if node is not None and isinstance(node.op, Index) and len(node.inputs) == 1:
            source, items = node.inputs[0].owner, node.op.items
            if source is not None and isinstance(source.op, Shape) and len(items) == 1 and isinstance(items[0], int):
                return self.dims(source.inputs[0])[items[0]]
        if id(var) not in self._sizes:
            self._sizes[id(var)] = Dim(f"{var.label()}")
            self._alive.append(var)
        return self._sizes[id(var)]

    def same(self, a: Variable, b: Variable) -> bool:
        """True when ``a`` and ``b`` provably have the same run-time shape."""
        return self.dims(a) == self.dims(b)


def _static(var: Variable) -> tuple[Size, ...]:
    return tuple(d if d is not None else fresh_dim() for d in var.type.shape)
