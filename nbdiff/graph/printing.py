"""``nd.dprint``: a deterministic text listing of a graph, the first debugging tool and a test oracle.

The listing is let-style, in execution order (inputs before users), one line per bound node. For
``t = nd.tanh(x)`` (line 3), ``y = nd.sum(t * t)`` (line 4) and ``g = nd.grad(y, x)`` (line 5) in ``f.py``,
``nd.dprint([y, g])`` prints::

    input x                                 : float64[?]  @ f.py:2
    %0 = tanh(x)                            : float64[?]  @ f.py:3
    %1 = mul(%0, %0)                        : float64[?]  @ f.py:4
    %2 = sum{axes=(0,), keepdims=False}(%1) : float64[]   @ f.py:4
    %3 = expand_dims{axes=(0,)}(1.0)        : float64[1]  @ f.py:5  [grad of sum @ f.py:4]
    %4 = broadcast_like(%3, %1)             : float64[?]  @ f.py:5  [grad of sum @ f.py:4]
    %5 = mul(%4, %0)                        : float64[?]  @ f.py:5  [grad of mul @ f.py:4]
    %6 = add(%5, %5)                        : float64[?]  @ f.py:5  [grad]
    %7 = mul(%6, sub(1.0, %1))              : float64[?]  @ f.py:5  [grad of tanh @ f.py:3]
    output %2, %7

A node used more than once (a shared subexpression) always gets a short name ``%k``, printed once with its
definition. A node used once is written inline in its user when that changes nothing the line shows (same type,
same source line, same gradient label) and the nesting stays shallow; every other node gets its own line, so a
10,000-node chain prints as a flat listing. Gradient nodes are labelled with the forward node they differentiate
(``[grad of tanh @ f.py:3]``). Nothing depends on ids or addresses: the same graph built twice prints the same.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from nbdiff.errors import GraphError
from nbdiff.graph.basic import Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.provenance import same_cell_names
from nbdiff.graph.traversal import graph_inputs, toposort

MAX_INLINE_DEPTH = 3  # at most ``a(b(c(x)))`` on one line
MAX_INLINE_CHARS = 72  # an inlined expression longer than this gets its own line
SMALL_CONSTANT = 8  # constants with at most this many elements print by value
EXPR_COLUMN = 60  # the type column starts here unless every expression is shorter
DEFAULT_DTYPES = ("float64", "int64", "bool")  # constants of these dtypes print without a dtype wrapper


def dprint(obj: Any, file: TextIO | None = None) -> None:
    """Print ``obj`` (a variable, a list of variables, an ``nd.function`` or a ``Graph``) as a text listing."""
    print(dprint_str(obj), file=sys.stdout if file is None else file)


def dprint_str(obj: Any) -> str:
    """The listing ``dprint`` prints, as a string (without a trailing newline)."""
    inputs, outputs, nodes = _collect(obj)
    with same_cell_names():
        return _Printer(inputs, outputs, nodes).render()


def _collect(obj: Any) -> tuple[list[Variable], list[Variable], list[Apply]]:
    """Inputs, outputs and nodes (in execution order) of whatever ``dprint`` was given."""
    graph = obj if isinstance(obj, Graph) else getattr(obj, "graph", None)
    if isinstance(graph, Graph):
        return list(graph.inputs), list(graph.outputs), list(graph.nodes)
    outputs = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    for position, out in enumerate(outputs):
        if not isinstance(out, Variable):
            raise GraphError(
                f"dprint: expected a variable, a list of variables, an nd.function or a Graph; "
                f"item {position} is a {type(out).__name__}"
            )
    inputs = [v for v in graph_inputs(outputs) if not isinstance(v, Constant)]
    return inputs, outputs, toposort(outputs)


def constant_text(const: Constant) -> str | None:
    """A small constant's value as text (``2.0``, ``float32(0.5)``, ``[1, 2]``); None for large constants."""
    if const.name:
        return const.name
    data = const.data
    if data.size > SMALL_CONSTANT:
        return None
    text = _format_array(data)
    return text if data.dtype.name in DEFAULT_DTYPES else f"{data.dtype.name}({text})"


def _format_array(data: np.ndarray) -> str:
    """Nested-list text of an array using NumPy's shortest round-trip scalar formatting."""
    if data.ndim == 0:
        return str(data[()])
    return "[" + ", ".join(_format_array(row) for row in data) + "]"


@dataclass
class _Line:
    """One line of the listing: ``lhs = expr : type  @ site  [label]`` (inputs have an empty ``expr``)."""

    lhs: str
    expr: str
    type: str
    where: str
    label: str = ""
    keyword: str = ""  # "input" for input lines
    details: list[str] = field(default_factory=list)  # indented lines below it (a fused kernel's members)


@dataclass
class _Printer:
    """Decides names and inlining for one listing, then renders it (everything iterative, in execution order)."""

    inputs: list[Variable]
    outputs: list[Variable]
    nodes: list[Apply]
    names: dict[int, str] = field(default_factory=dict)  # id(variable) -> how it is referred to
    inline: dict[int, str] = field(default_factory=dict)  # id(node) -> its expression text, when inlined
    depth: dict[int, int] = field(default_factory=dict)  # id(node) -> nesting depth of its expression
    users: dict[int, Apply] = field(default_factory=dict)  # id(variable) -> its first user
    kernels: dict[int, str] = field(default_factory=dict)  # id(fused node) -> "k0", "k1", ... by position

    def render(self) -> str:
        self._name_inputs()
        uses = self._count_uses()
        for node in self.nodes:
            for var in node.inputs:
                self.users.setdefault(id(var), node)
        lines = [self._input_line(v) for v in self.inputs]
        lines += self._constant_lines()
        bound = 0
        for node in self.nodes:
            expr, depth = self._expression(node)
            if self._inlinable(node, expr, depth, uses):
                self.inline[id(node)] = expr
                self.depth[id(node)] = depth
                continue
            lhs = []
            for out in node.outputs:
                self.names[id(out)] = f"%{bound}"
                lhs.append(f"%{bound}")
                bound += 1
            lines.append(self._node_line(node, ", ".join(lhs), expr))
        text = _layout(lines)
        returned = ", ".join(self._ref(v) for v in self.outputs)
        footer = f"output {returned}".rstrip()
        return f"{text}\n{footer}" if text else footer

    # -- names ---------------------------------------------------------------------------------------------------
    def _name_inputs(self) -> None:
        """Inputs are referred to by their names; unnamed ones become ``in0``, ``in1``; repeats get ``#2``."""
        taken: dict[str, int] = {}
        unnamed = 0
        for var in self.inputs:
            base = var.name
            if not base:
                base = f"in{unnamed}"
                unnamed += 1
            count = taken.get(base, 0) + 1
            taken[base] = count
            self.names[id(var)] = base if count == 1 else f"{base}#{count}"

    def _count_uses(self) -> dict[int, int]:
        """How often each variable is referred to (by nodes, and by the outputs line)."""
        uses: dict[int, int] = {}
        for node in self.nodes:
            for var in node.inputs:
                uses[id(var)] = uses.get(id(var), 0) + 1
        for out in self.outputs:
            uses[id(out)] = uses.get(id(out), 0) + 1
        return uses

    def _constant_lines(self) -> list[_Line]:
        """Large constants get a name ``c0``, ``c1`` and a line of their own; small ones print by value."""
        lines = []
        seen: set[int] = set()
        for var in [v for node in self.nodes for v in node.inputs] + self.outputs:
            if not isinstance(var, Constant) or id(var) in seen:
                continue
            seen.add(id(var))
            text = constant_text(var)
            if text is None:
                name = f"c{len(lines)}"
                self.names[id(var)] = name
                lines.append(_Line(name, "constant", str(var.type), ""))
            else:
                self.names[id(var)] = text
        return lines

    def _ref(self, var: Variable) -> str:
        """How an input of a node is written: a name, a constant's value, or an inlined expression."""
        if id(var) in self.names:
            return self.names[id(var)]
        if var.owner is not None and id(var.owner) in self.inline:
            return self.inline[id(var.owner)]
        return var.label()  # a root the listing does not know (e.g. a non-input root of a Graph)

    # -- inlining ------------------------------------------------------------------------------------------------
    def _expression(self, node: Apply) -> tuple[str, int]:
        args = ", ".join(self._ref(v) for v in node.inputs)
        depth = 1 + max((self.depth.get(id(v.owner), 0) for v in node.inputs if v.owner is not None), default=0)
        if _is_fused(node):
            name = self.kernels.setdefault(id(node), f"k{len(self.kernels)}")
            return f"fused {name}{{{node.op.summary()}}}({args})", depth
        return f"{node.op.describe()}({args})", depth

    def _inlinable(self, node: Apply, expr: str, depth: int, uses: dict[int, int]) -> bool:
        """A single-use, single-output node whose user shows the same type, line and label, kept shallow."""
        if len(node.outputs) != 1 or uses.get(id(node.out), 0) != 1 or _is_fused(node):
            return False
        if depth >= MAX_INLINE_DEPTH or len(expr) > MAX_INLINE_CHARS:
            return False
        user = self.users.get(id(node.out))
        if user is None or len(user.outputs) != 1:
            return False
        return user.out.type == node.out.type and _where(user) == _where(node) and _label(user) == _label(node)

    # -- lines ---------------------------------------------------------------------------------------------------
    def _input_line(self, var: Variable) -> _Line:
        site = var.provenance.site if var.provenance is not None else None
        return _Line(self.names[id(var)], "", str(var.type), site.label if site else "", keyword="input")

    def _node_line(self, node: Apply, lhs: str, expr: str) -> _Line:
        types = ", ".join(str(out.type) for out in node.outputs)
        if _is_fused(node):
            members = node.op.members()
            gradient = sum(p.is_gradient for _, p in members if p is not None)
            label = f"fused: {len(members)} members, {gradient} gradient"
            return _Line(lhs, expr, types, _where(node), label, details=self._kernel_listing(node))
        return _Line(lhs, expr, types, _where(node), _label(node))

    def _kernel_listing(self, node: Apply) -> list[str]:
        """A fused kernel's program, one member per line with its user line: ``t3 = exp(t2)  @ f.py:4``, then
        what each output of the node is (``%5 = sum{...}(t9)``)."""
        op = node.op
        refs = [self._ref(v) for v in node.inputs] + [f"t{k}" for k in range(len(op.program))]
        members = op.members()
        rows: list[tuple[str, Any]] = []
        for k, instruction in enumerate(op.program):
            args = ", ".join(refs[r] for r in instruction.args)
            rows.append((f"t{k} = {instruction.op.describe()}({args})", members[k][1]))
        extra = len(op.program)
        for out, ref, reduction in zip(node.outputs, op.results, op.reductions):
            if reduction is None:
                rows.append((f"{self._ref(out)} = {refs[ref]}", None))
            else:
                rows.append((f"{self._ref(out)} = {reduction.describe()}({refs[ref]})", members[extra][1]))
                extra += 1
        width = min(max(len(text) for text, _ in rows), EXPR_COLUMN)
        lines = []
        for text, provenance in rows:
            line = f"    {text.ljust(width)}"
            if provenance is not None:
                site = provenance.site
                line += f"  @ {site.label}" if site is not None else ""
                label = provenance.primary.label()
                line += f"  [{label}]" if label else ""
            lines.append(line.rstrip())
        return lines


def _where(node: Apply) -> str:
    site = node.provenance.site
    return site.label if site is not None else ""


def _label(node: Apply) -> str:
    return node.provenance.primary.label()


def _is_fused(node: Apply) -> bool:
    from nbdiff.ops.fused import FusedElemwise

    return isinstance(node.op, FusedElemwise)


def _layout(lines: list[_Line]) -> str:
    """Align the type and site columns; the expression column is capped so one long line does not widen all."""
    heads = [f"input {ln.lhs}" if ln.keyword == "input" else f"{ln.lhs} = {ln.expr}" for ln in lines]
    width = min(max((len(h) for h in heads), default=0), EXPR_COLUMN)
    type_width = max((len(ln.type) for ln in lines), default=0)
    rendered = []
    for head, line in zip(heads, lines):
        text = f"{head.ljust(width)} : {line.type.ljust(type_width)}"
        if line.where:
            text += f"  @ {line.where}"
        if line.label:
            text += f"  [{line.label}]"
        rendered.append(text.rstrip())
        rendered.extend(line.details)
    return "\n".join(rendered)
