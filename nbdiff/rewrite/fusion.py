"""The fusion pass: maximal connected groups of elementwise nodes sharing one loop, with the sums they feed,
become single ``FusedElemwise`` nodes; ``kernels_of`` lists a graph's kernels for ``f.kernels``.

Grouping walks the graph once in execution order. A *candidate* is an elementwise node, or a shape-following node
that is elementwise in effect (``broadcast_like``, a fill, a ``sum_to_like`` whose symbolic shapes prove it a
no-op); its loop shape is its output's symbolic shape (``ShapeFacts``). A candidate joins the groups of the
candidates it consumes that share its loop shape, and a ``Sum`` of a group's member joins that group as a
trailing reduction (whose result nothing in the group may use). Merges that would make a group depend on itself
through a node outside it are refused: every variable carries the set of groups it depends on (a bit mask), each
group remembers what its outside producers depend on, and a merge must leave that disjoint from the group.

After the walk, groups that share a loop shape but are not connected (the per-row kernels of an unrolled Jacobian,
independent outputs) merge too, so one loop computes all of them, when neither kernel waits for the other through
any path (the groups' dependency masks, closed over the kernels formed so far).

The same code runs on gradient graphs as on forward ones, so a value and its gradient can share one kernel with
several outputs: a member whose result is used outside its group (or is a graph output) becomes a kernel output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdiff.graph.basic import Apply, Variable
from nbdiff.graph.dims import Size, broadcasts_into
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.provenance import Provenance, inherit
from nbdiff.graph.traversal import paused_gc
from nbdiff.graph.types import is_float
from nbdiff.ops.broadcast import SumToLike
from nbdiff.ops.elemwise import Elemwise
from nbdiff.ops.fused import MAX_FUSED_NDIM, FusedElemwise, Instruction, member_kind
from nbdiff.ops.reduce import Sum
from nbdiff.rewrite.engine import RewriteResult, apply_rules, rebuild, rule
from nbdiff.rewrite.history import RuleFiring
from nbdiff.rewrite.pipeline import Pass, register_pass
from nbdiff.rewrite.shapes import ShapeFacts

RULE = "fuse_elemwise"
IDENTITY = "a connected elementwise group sharing one loop (+ the sums it feeds) -> one fused kernel"


# ---------------------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Group:
    """Nodes that will share one loop: ``mask`` holds the group's bits, ``outside`` maps each producer outside
    the group that feeds a member to the groups that producer depends on."""

    loop: tuple[Size, ...]
    mask: int
    members: list[Apply] = field(default_factory=list)
    outside: dict[int, int] = field(default_factory=dict)  # id(producer node) -> its dependency mask
    parent: _Group | None = None
    depends: int = 0  # the union of ``outside``'s masks
    seen: bool = False  # a node outside the group has recorded depending on it

    def root(self) -> _Group:
        group = self
        while group.parent is not None:
            group = group.parent
        return group


class _Grouper:
    """One walk over the graph in execution order, assigning candidates and trailing sums to groups."""

    def __init__(self, graph: Graph):
        self.facts = ShapeFacts(graph.inputs)
        self.group_of: dict[int, _Group] = {}  # id(node) -> the group it joined (follow .root())
        self.reduction: set[int] = set()  # ids of Sum nodes that joined a group as trailing reductions
        self.reach: dict[int, int] = {}  # id(variable) -> mask of the groups it depends on (itself included)
        self.bits = 0
        self.created: list[_Group] = []
        self.stale: list[_Group] = []  # groups that read more since a node outside them recorded depending on them

    def run(self, nodes: list[Apply]) -> list[_Group]:
        """The final groups (merged ones left out), in the order their first member appears."""
        for node in nodes:
            above = 0
            for var in node.inputs:
                above |= self._depends_of(var)
            group = None
            if self._is_candidate(node):
                group = self._place(node)
            else:
                group = self._feeding_group(node)
                if group is not None:
                    group.members.append(node)
                    self.group_of[id(node)] = group
                    self.reduction.add(id(node))
            own = group.root().mask if group is not None else 0
            for out in node.outputs:
                self.reach[id(out)] = above | own
            self._mark_seen(node, group.root() if group is not None else None)
        self._merge_independent()
        return [g for g in self.created if g.parent is None]

    def _merge_independent(self) -> None:
        """Merge groups with elementwise members that share a loop shape but are not connected (e.g. the per-row
        kernels of an unrolled Jacobian): one loop with several outputs instead of several loops. Groups are taken
        in creation order, each joining the first earlier group of its loop shape when neither kernel waits for
        the other, directly or through any node outside them."""
        by_loop: dict[tuple[Size, ...], list[_Group]] = {}
        memo: dict[int, int] = {}  # id(root) -> the bits of the groups its kernel waits for
        for group in self.created:
            if group.parent is not None or not any(isinstance(node.op, Elemwise) for node in group.members):
                continue
            peers = by_loop.setdefault(group.loop, [])
            for position, peer in enumerate(peers):
                if not self._ancestors(peer, memo) & group.mask and not self._ancestors(group, memo) & peer.mask:
                    peers[position] = self._join_independent(peer, group, memo)
                    break
            else:
                peers.append(group)

    def _join_independent(self, a: _Group, b: _Group, memo: dict[int, int]) -> _Group:
        """Join two unconnected groups and update the memoised ancestors: whatever waited for one of them now
        waits for both, and for everything either waits for."""
        waits = memo.pop(id(a)) | memo.pop(id(b))
        joined = self._join(a, b, {**a.outside, **b.outside})
        for key, ancestors in memo.items():
            if ancestors & joined.mask:
                memo[key] = ancestors | joined.mask | waits
        memo[id(joined)] = waits
        return joined

    def _ancestors(self, root: _Group, memo: dict[int, int]) -> int:
        """The bits of every group that ``root``'s kernel waits for, through its outside producers and the kernels
        of the groups they depend on (transitively), memoised in ``memo``."""
        pending = [root]
        expanding: set[int] = set()  # roots waiting for their parents (only a cycle would meet one again)
        while pending:
            current = pending[-1]
            if id(current) in memo:
                pending.pop()
                continue
            direct = current.depends
            parents = self._roots_of(direct & ~current.mask)
            missing = [p for p in parents if id(p) not in memo and id(p) not in expanding]
            if missing:
                expanding.add(id(current))
                pending.extend(missing)
                continue
            for parent in parents:
                direct |= parent.mask | memo.get(id(parent), 0)
            memo[id(current)] = direct
            pending.pop()
        return memo[id(root)]

    def _roots_of(self, mask: int) -> list[_Group]:
        """The groups (roots) owning the bits of ``mask``. (Bit ``k`` is ``self.created[k]``'s.)"""
        roots = []
        while mask:
            root = self.created[(mask & -mask).bit_length() - 1].root()
            roots.append(root)
            mask &= ~root.mask
        return roots

    def _is_candidate(self, node: Apply) -> bool:
        """Elementwise in effect, with one output: can share a loop with its neighbours."""
        kind = member_kind(node.op)
        if kind is None or len(node.outputs) != 1:
            return False
        if any(var.ndim > MAX_FUSED_NDIM for var in node.inputs + node.outputs):
            return False  # beyond what a kernel handles: the interpreter runs it as it is
        if isinstance(node.op, SumToLike):  # only when it provably sums nothing
            g, like = node.inputs
            return self.facts.same(g, like)
        return True

    def _feeding_group(self, node: Apply) -> _Group | None:
        """For a ``Sum`` of a (non-reduction) group member: that member's group."""
        if not isinstance(node.op, Sum) or len(node.inputs) != 1:
            return None
        producer = node.inputs[0].owner
        if producer is None or id(producer) not in self.group_of or id(producer) in self.reduction:
            return None
        return self.group_of[id(producer)].root()

    def _place(self, node: Apply) -> _Group:
        """Start a group for ``node``, then merge in each neighbouring group that shares its loop, if acyclic."""
        loop = self.facts.dims(node.outputs[0])
        group = _Group(loop, 1 << self.bits, [node])
        self.bits += 1
        self.created.append(group)
        self.group_of[id(node)] = group
        for var in node.inputs:
            depends = self._depends_of(var) if var.owner is not None else 0
            if depends:
                group.outside[id(var.owner)] = depends
                group.depends |= depends
        for var in node.inputs:
            producer = var.owner
            if producer is None or id(producer) not in self.group_of or id(producer) in self.reduction:
                continue
            other = self.group_of[id(producer)].root()
            if other is not group and other.loop == loop:
                group = self._merge(group, other)
        return group

    def _depends_of(self, var: Variable) -> int:
        """The groups ``var`` depends on: its recorded mask, and the kernel computing it as that group is now
        (which reads everything any of its members reads)."""
        mask = self.reach.get(id(var), 0)
        owner = self.group_of.get(id(var.owner)) if var.owner is not None else None
        if owner is not None:
            root = owner.root()
            mask |= root.mask | root.depends
        return mask

    def _mark_seen(self, node: Apply, mine: _Group | None) -> None:
        """The groups ``node`` reads from outside: what ``node`` recorded about them goes stale if they grow."""
        for var in node.inputs:
            owner = self.group_of.get(id(var.owner)) if var.owner is not None else None
            if owner is not None and owner.root() is not mine:
                owner.root().seen = True

    def _closure(self, mask: int) -> int:
        """``mask`` plus what its groups' kernels read now. Recorded masks are complete when recorded (see
        ``_depends_of``); they go stale only where a group read by a node outside it has grown since, so only
        those groups (``self.stale``) are expanded, to a fixed point."""
        result = mask
        changed = bool(self.stale)
        while changed:
            changed = False
            for root in self._stale_roots():
                if root.mask & result and (root.mask | root.depends) & ~result:
                    result |= root.mask | root.depends
                    changed = True
        return result

    def _stale_roots(self) -> list[_Group]:
        """The stale groups as they are now (merged ones as their roots, each once)."""
        roots: dict[int, _Group] = {}
        for group in self.stale:
            root = group.root()
            roots.setdefault(id(root), root)
        self.stale = list(roots.values())
        return self.stale

    def _merge(self, a: _Group, b: _Group) -> _Group:
        """``a`` and ``b`` as one group, or ``a`` unchanged when merging would create a cycle."""
        mask = a.mask | b.mask
        outside = {}
        for table in (a.outside, b.outside):
            for producer, depends in table.items():
                owner = self.group_of.get(producer)
                if owner is not None and owner.root() in (a, b) and producer not in self.reduction:
                    continue  # now inside the merged group (a trailing sum's result never is: it ends the loop)
                outside[producer] = depends
        combined = 0
        for depends in outside.values():
            combined |= depends
        if self._closure(combined) & mask:
            return a  # a path leaves the merged group and comes back: fusing would make a cycle
        return self._join(a, b, outside)

    def _join(self, a: _Group, b: _Group, outside: dict[int, int]) -> _Group:
        """``a`` and ``b`` as one group (the bigger absorbs the smaller), fed by the producers in ``outside``."""
        depends = 0
        for value in outside.values():
            depends |= value
        reads = a.mask | b.mask | depends
        grown = any(part.seen and reads & ~(part.mask | part.depends) for part in (a, b))
        big, small = (a, b) if len(a.members) >= len(b.members) else (b, a)
        small.parent = big
        big.members.extend(small.members)
        big.mask = a.mask | b.mask
        big.outside = outside
        big.depends = depends
        big.seen = a.seen or b.seen
        if grown:  # nodes outside a part recorded it reading less than the joined kernel does
            self.stale.append(big)
        return big


def _worth_a_kernel(group: _Group) -> bool:
    """At least one elementwise op, and more than one member (a lone elementwise node only with a sum), or a lone
    elementwise node that broadcasts an array along leading axes (a bias added to a batch): a compiled loop reads
    the bias in place, where NumPy's step is the only one left between two matmuls."""
    has_elemwise = any(isinstance(node.op, Elemwise) for node in group.members)
    if not has_elemwise:
        return False
    if len(group.members) >= 2:
        return True
    (node,) = group.members
    return any(0 < var.ndim < node.outputs[0].ndim for var in node.inputs)


def _sink_private_tails(
    groups: list[_Group], grouper: _Grouper, users: dict[int, list[Apply]], graph_outputs: set[int]
) -> None:
    """Move members that a group computes only for one later group into that group.

    The walk puts a node in the group of its producers, so the derivative mask of ``relu`` (``relu(x) > 0``) joins
    the forward kernel and becomes a second output that is written, kept alive across the matmuls and read back by
    the backward kernel. Such a *tail* (members none of whose results leave the group except to members of one
    other group ``H`` whose loop the group's broadcasts into, and that only read the group's inputs or results it
    exports anyway) moves into ``H``: the first kernel loses outputs and gains none. ``H`` waited for the group
    already (it read the tail's results), so no cycle appears; elementwise members commute with broadcasting, so
    computing the tail in ``H``'s loop gives the values ``H`` read before."""
    for group in groups:
        if group.parent is not None:
            continue
        targets = []
        for node in group.members:
            for user in users.get(id(node.outputs[0]), []):
                owner = grouper.group_of.get(id(user))
                target = owner.root() if owner is not None else None
                if (
                    target is not None
                    and target is not group
                    and target not in targets
                    and broadcasts_into(group.loop, target.loop)
                ):
                    targets.append(target)
        for target in targets:
            tail = _tail_for(group, target, grouper, users, graph_outputs)
            if not tail:
                continue
            moved = [node for node in group.members if id(node) in tail]
            group.members = [node for node in group.members if id(node) not in tail]
            target.members.extend(moved)
            for node in moved:
                grouper.group_of[id(node)] = target


def _tail_for(
    group: _Group, target: _Group, grouper: _Grouper, users: dict[int, list[Apply]], graph_outputs: set[int]
) -> set[int]:
    """The ids of ``group``'s members that can move into ``target`` (see ``_sink_private_tails``); empty if none."""
    inside = {id(node): node for node in group.members}
    tail = {
        key for key, node in inside.items() if key not in grouper.reduction and id(node.outputs[0]) not in graph_outputs
    }
    changed = True
    while changed:  # the largest set whose every user is in the tail or a non-reduction member of the target
        changed = False
        for key in list(tail):
            for user in users.get(id(inside[key].outputs[0]), []):
                owner = grouper.group_of.get(id(user))
                in_target = owner is not None and owner.root() is target and id(user) not in grouper.reduction
                if id(user) not in tail and not in_target:
                    tail.discard(key)
                    changed = True
                    break
    if not tail:
        return tail
    for key in tail:  # what the tail reads from the rest of the group must leave the group already
        for var in inside[key].inputs:
            producer = var.owner
            if producer is None or id(producer) not in inside or id(producer) in tail:
                continue
            leaves = id(var) in graph_outputs or any(id(u) not in inside for u in users.get(id(var), []))
            if not leaves:
                return set()
    return tail


# ---------------------------------------------------------------------------------------------------------------
# Building the kernels
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """One fused kernel to build: its members (execution order), outside inputs, and outputs."""

    members: list[Apply]
    inputs: list[Variable]  # variables from outside the group, in first-use order
    instructions: list[Apply]  # members computed in the loop (not the trailing sums)
    outputs: list[tuple[Variable, Apply | None]]  # (member result, the Sum node reducing it or None)

    @property
    def exported(self) -> list[Variable]:
        """The original variables the kernel's outputs replace, in output order."""
        return [var if reduction is None else reduction.outputs[0] for var, reduction in self.outputs]


def _plan_group(
    group: _Group, order: dict[int, int], users: dict[int, list[Apply]], graph_outputs: set[int], reduction: set[int]
) -> _Plan:
    """Sort the members, find the kernel's inputs and which member results leave the loop."""
    members = sorted(group.members, key=lambda node: order[id(node)])
    inside = {id(node) for node in members}
    computed = {id(node.outputs[0]) for node in members}
    inputs: list[Variable] = []
    seen: set[int] = set()
    instructions = [node for node in members if id(node) not in reduction]
    for node in instructions:
        for var in node.inputs:
            if id(var) not in computed and id(var) not in seen:
                seen.add(id(var))
                inputs.append(var)
    outputs: list[tuple[Variable, Apply | None]] = []
    for node in members:
        if id(node) in reduction:
            outputs.append((node.inputs[0], node))
            continue
        out = node.outputs[0]
        if id(out) in graph_outputs or any(id(user) not in inside for user in users.get(id(out), [])):
            outputs.append((out, None))
    return _Plan(members, inputs, instructions, outputs)


def _fused_op(plan: _Plan, name: str) -> FusedElemwise:
    """The ``FusedElemwise`` op for ``plan``, its references numbered over the kernel's (outside) inputs."""
    refs = {id(var): position for position, var in enumerate(plan.inputs)}
    program = []
    for k, node in enumerate(plan.instructions):
        program.append(Instruction(node.op, tuple(refs[id(v)] for v in node.inputs)))
        refs[id(node.outputs[0])] = len(plan.inputs) + k
    reductions = tuple(None if r is None else r.op for _, r in plan.outputs)
    provenance: list[Provenance | None] = [node.provenance for node in plan.instructions]
    provenance += [r.provenance for _, r in plan.outputs if r is not None]
    return FusedElemwise(
        input_kinds=tuple((v.dtype, v.ndim) for v in plan.inputs),
        program=tuple(program),
        results=tuple(refs[id(var)] for var, _ in plan.outputs),
        reductions=reductions,  # type: ignore[arg-type]
        member_provenance=tuple(provenance),
        kernel_name=name,
    )


def _unit_order(graph: Graph, unit_of: dict[int, object], unit_inputs: dict[int, list[Variable]]) -> list[object]:
    """Units (plain nodes, or plans standing for their fused node) in the order ``toposort`` will list the new
    graph: a depth-first walk from the outputs, inputs in order. Naming kernels in this order makes "k0", "k1"
    their positions in the rewritten graph."""
    order: list[object] = []
    done: set[int] = set()
    for out in graph.outputs:
        if out.owner is None:
            continue
        start = unit_of[id(out.owner)]
        if id(start) in done:
            continue
        stack = [(start, 0)]
        active = {id(start)}
        while stack:
            unit, position = stack[-1]
            inputs = unit_inputs[id(unit)]
            if position < len(inputs):
                stack[-1] = (unit, position + 1)
                owner = inputs[position].owner
                if owner is None:
                    continue
                parent = unit_of[id(owner)]
                if id(parent) in done or id(parent) in active:
                    continue
                stack.append((parent, 0))
                active.add(id(parent))
            else:
                stack.pop()
                active.discard(id(unit))
                done.add(id(unit))
                order.append(unit)
    return order


@rule(SumToLike)
def sum_to_like_leading(node: Apply, facts: ShapeFacts) -> Variable | None:
    """sum_to_like(g, like) -> sum_to_like(sum(g, leading axes), like) when g has more axes than like"""
    # The axes broadcasting added in front are summed whatever the shapes; as a plain sum of a fused member's value
    # they join its kernel (a bias gradient accumulated per column, ``backends/cpu_rows.py``), leaving a
    # ``sum_to_like`` over the axes ``like`` may have broadcast, which is a no-op at run time in the usual case.
    g, like = node.inputs
    lead = g.ndim - like.ndim
    if lead <= 0 or not is_float(g.dtype) or facts.same(g, like):
        return None
    return SumToLike()(Sum(tuple(range(lead)), False)(g), like)


def fuse(graph: Graph) -> RewriteResult:
    """Split ``sum_to_like`` (``sum_to_like_leading``), then replace each worthwhile group of ``graph`` by one fused
    node; record one firing per split and per kernel."""
    split = apply_rules(graph, [sum_to_like_leading])
    fused = _fuse(split.graph)
    return RewriteResult(fused.graph, split.firings + fused.firings)


def _fuse(graph: Graph) -> RewriteResult:
    """Replace each worthwhile group of ``graph`` by one fused node; record one firing per kernel."""
    with paused_gc():
        grouper = _Grouper(graph)
        groups = grouper.run(graph.nodes)
        users: dict[int, list[Apply]] = {}
        for node in graph.nodes:
            for var in node.inputs:
                users.setdefault(id(var), []).append(node)
        graph_outputs = {id(v) for v in graph.outputs}
        _sink_private_tails(groups, grouper, users, graph_outputs)
        groups = [g for g in groups if _worth_a_kernel(g)]
        if not groups:
            return RewriteResult(graph)
        order = {id(node): position for position, node in enumerate(graph.nodes)}
        plans = [_plan_group(g, order, users, graph_outputs, grouper.reduction) for g in groups]
        unit_of: dict[int, object] = {id(node): node for node in graph.nodes}
        unit_inputs: dict[int, list[Variable]] = {id(node): list(node.inputs) for node in graph.nodes}
        for plan in plans:
            unit_inputs[id(plan)] = plan.inputs
            for node in plan.members:
                unit_of[id(node)] = plan
        return _build(graph, _unit_order(graph, unit_of, unit_inputs))


def _build(graph: Graph, units: list[object]) -> RewriteResult:
    """Create the new nodes unit by unit (kernels named by position) and the rewritten graph."""
    mapping: dict[int, Variable] = {}
    firings: list[RuleFiring] = []
    kernels = 0
    for unit in units:
        if isinstance(unit, Apply):
            node = rebuild(unit, [mapping.get(id(v), v) for v in unit.inputs])
            mapping.update((id(old), new) for old, new in zip(unit.outputs, node.outputs))
            continue
        assert isinstance(unit, _Plan)
        name = f"k{kernels}"
        kernels += 1
        op = _fused_op(unit, name)
        with inherit([_distinct_origins(unit.members)], f"fused into kernel {name}"):
            fused = op.make_node(*[mapping.get(id(v), v) for v in unit.inputs])
        mapping.update((id(old), new) for old, new in zip(unit.exported, fused.outputs))
        firings.append(
            RuleFiring(
                RULE,
                IDENTITY,
                ", ".join(op.member_names()),
                op.describe(),
                unit.members[0].provenance.describe(),
            )
        )
    outputs = [mapping.get(id(v), v) for v in graph.outputs]
    return RewriteResult(Graph(graph.inputs, outputs), firings)


def _distinct_origins(members: list[Apply]) -> Provenance:
    """Every origin of the members, each once, in first-seen order (what the fused node's provenance holds)."""
    origins: dict = {}
    for node in members:
        for origin in node.provenance.origins:
            origins.setdefault(origin, None)
    return Provenance(list(origins))


register_pass(Pass("fusion", fuse, "elementwise groups and the sums they feed become fused kernels"))


# ---------------------------------------------------------------------------------------------------------------
# Inspection: f.kernels
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One member of a kernel: its op, the user's line, and the derivative transform that built it (if any)."""

    op: str
    line: str  # "file:line" (or "<unknown>")
    gradient: bool
    transform: str  # e.g. "pullback of mul at f.py:3"; "" for forward members
    provenance: Provenance | None = field(default=None, repr=False, compare=False)  # every site, for widgets

    def __repr__(self) -> str:
        where = f"{self.op} @ {self.line}"
        if self.gradient:
            return f"{where} [{self.transform or 'gradient'}]"
        return where


@dataclass(frozen=True)
class Kernel:
    """A fused kernel of a graph: its name (position), node, members with provenance, inputs, outputs, hash."""

    name: str
    node: Apply
    members: tuple[Member, ...]
    inputs: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    structural_hash: str

    @property
    def op(self) -> FusedElemwise:
        return self.node.op  # type: ignore[return-value]

    def __repr__(self) -> str:
        gradient = sum(m.gradient for m in self.members)
        ins = ", ".join(v.label() for v in self.inputs)
        outs = ", ".join(str(v.type) for v in self.outputs)
        return (
            f"<Kernel {self.name} {self.structural_hash[:10]}: {len(self.members)} members ({gradient} gradient), "
            f"({ins}) -> ({outs})>"
        )


def member_of(op_name: str, provenance: Provenance | None) -> Member:
    """A ``Member`` from an op name and its provenance (forward, or built by a derivative transform)."""
    if provenance is None:
        return Member(op_name, "<unknown>", False, "", None)
    site = provenance.site
    line = site.label if site is not None else "<unknown>"
    derivative = provenance.derivative
    transform = derivative.describe() if derivative is not None else ""
    return Member(op_name, line, provenance.is_gradient, transform, provenance)


def kernels_of(graph: Graph) -> list[Kernel]:
    """The fused kernels of ``graph`` in execution order, named ``k0``, ``k1``, ... by position."""
    with paused_gc():
        return [_kernel(node, f"k{k}") for k, node in enumerate(n for n in graph.nodes if _is_kernel(n))]


def _is_kernel(node: Apply) -> bool:
    return isinstance(node.op, FusedElemwise)


def _kernel(node: Apply, name: str) -> Kernel:
    """The ``Kernel`` descriptor of one fused node."""
    op: FusedElemwise = node.op  # type: ignore[assignment]
    names = op.member_names()
    members = tuple(member_of(names[k], provenance) for k, (_, provenance) in enumerate(op.members()))
    return Kernel(name, node, members, tuple(node.inputs), tuple(node.outputs), op.structural_hash())
