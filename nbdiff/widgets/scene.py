"""What the graph view draws: boxes and edges built from a ``Graph`` (and its fused kernels), before layout.

A ``Scene`` is plain data: one ``Box`` per input, constant, node, fused kernel and output, in a deterministic
order (inputs, constants, nodes in execution order, outputs), and edges as index pairs. Hiding gradient nodes and
collapsing large graphs (kernels drawn as one box, constants hidden, chains merged into one box and, if still too
large, ops of one kind in bands of layers merged) are transformations of a scene, each named in the caption.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from nbdiff.graph.basic import Apply, Constant, Variable
from nbdiff.graph.fgraph import Graph
from nbdiff.graph.printing import constant_text
from nbdiff.graph.provenance import Provenance, same_cell_names
from nbdiff.widgets.layout import assign_layers, topological_order

COLLAPSE_ABOVE = 500  # scenes drawing more boxes than this (kernel members included) are collapsed
MAX_LAYERS = 100  # a collapsed scene has at most about this many layers (a deep graph stays readable)
MIN_CHAIN = 3  # chains of at least this many single-use boxes collapse into one
LABEL_CHARS = 28  # op labels longer than this are shortened (the title keeps the full text)

KINDS = ("input", "constant", "forward", "gradient", "output", "kernel")


@dataclass(frozen=True)
class Member:
    """One op inside a fused kernel: its op name, whether it is a gradient op, its user line and provenance text."""

    op: str
    kind: str  # "forward" or "gradient"
    line: str
    title: str


@dataclass(frozen=True)
class Box:
    """One drawn box: what it shows (label, shape), what hovering shows (title) and where it came from (line)."""

    key: str
    kind: str  # one of KINDS
    label: str
    shape: str
    title: str
    line: str = ""
    members: tuple[Member, ...] = ()  # fused kernel members (drawn inside a compound box)
    member_edges: tuple[tuple[int, int], ...] = ()  # (k, j): member j uses member k's value
    count: int = 1  # how many graph nodes this box stands for (more than 1 when collapsed)
    is_output: bool = False  # computes one of the graph's outputs
    source: Any = None  # the Apply node or variable drawn (None for collapsed boxes)

    @property
    def collapsed(self) -> bool:
        return self.count > 1 and not self.members


@dataclass
class Scene:
    """Boxes, edges between them (index pairs, deduplicated, in first-use order) and a caption."""

    boxes: list[Box]
    edges: list[tuple[int, int]]
    notes: list[str] = field(default_factory=list)

    @property
    def drawn(self) -> int:
        """How many boxes the drawing holds, counting each member of an expanded kernel."""
        return sum(len(box.members) or 1 for box in self.boxes)

    @property
    def caption(self) -> str:
        return "; ".join(self.notes)

    def kinds(self, kind: str) -> list[int]:
        return [i for i, box in enumerate(self.boxes) if box.kind == kind]


def build_scene(
    graph: Graph,
    kernels: Sequence[Any] = (),
    gradient: bool = True,
    collapse_above: int = COLLAPSE_ABOVE,
    output_names: Sequence[str | None] = (),
) -> Scene:
    """The scene for ``graph``: every root, node and output; ``kernels`` (from ``kernels_of``) become compound boxes.

    ``gradient=False`` hides gradient nodes, except those computing an output. Scenes drawing more than
    ``collapse_above`` boxes (kernel members included) are collapsed until they are smaller. Output boxes show
    ``output_names`` (the names the user gave, e.g. a ``%%graph`` cell's ``cost`` and ``gradient of cost w.r.t.
    w``), else the output variable's own name, else ``output k``.
    """
    with same_cell_names():
        scene = _full_scene(graph, kernels, output_names)
    if not gradient:
        scene = hide_gradient(scene)
    if scene.drawn > collapse_above:
        scene = collapse(scene, collapse_above)
    return scene


def _full_scene(graph: Graph, kernels: Sequence[Any], output_names: Sequence[str | None]) -> Scene:
    by_node = {id(k.node): k for k in kernels}
    boxes: list[Box] = []
    index: dict[int, int] = {}  # id(variable or node) -> box index
    for var in graph.inputs:
        index[id(var)] = len(boxes)
        boxes.append(_input_box(var, len(boxes)))
    for const in graph.constants:
        index[id(const)] = len(boxes)
        boxes.append(_constant_box(const, len(boxes)))
    produces_output = {id(out.owner) for out in graph.outputs if out.owner is not None}
    for node in graph.nodes:
        kernel = by_node.get(id(node))
        box = _kernel_box(kernel, len(boxes)) if kernel is not None else _node_box(node, len(boxes))
        index[id(node)] = len(boxes)
        boxes.append(replace(box, is_output=True) if id(node) in produces_output else box)
    edges: dict[tuple[int, int], None] = {}
    for node in graph.nodes:
        for var in node.inputs:
            source = index.get(id(var.owner)) if var.owner is not None else index.get(id(var))
            if source is not None:
                edges[(source, index[id(node)])] = None
    for position, out in enumerate(graph.outputs):
        source = index.get(id(out.owner)) if out.owner is not None else index.get(id(out))
        given = output_names[position] if position < len(output_names) else None
        boxes.append(_output_box(out, position, len(boxes), given))
        if source is not None:
            edges[(source, len(boxes) - 1)] = None
    return Scene(boxes, list(edges))


# -- boxes -----------------------------------------------------------------------------------------------------------
def _input_box(var: Variable, i: int) -> Box:
    site = var.provenance.site
    title = f"input {var.label()} : {var.type}" + (f"\ndeclared at {site.describe()}" if site else "")
    return Box(f"n{i}", "input", var.label(), str(var.type), title, site.label if site else "", source=var)


def _constant_box(const: Constant, i: int) -> Box:
    text = constant_text(const) or "constant"
    return Box(f"n{i}", "constant", _shorten(text), str(const.type), f"constant {text} : {const.type}", source=const)


def _node_box(node: Apply, i: int) -> Box:
    provenance = node.provenance
    kind = "gradient" if provenance.is_gradient else "forward"
    types = ", ".join(str(out.type) for out in node.outputs)
    title = f"{node.op.describe()} : {types}\n{provenance_text(provenance)}"
    return Box(f"n{i}", kind, _shorten(op_label(node.op)), types, title, _line(provenance), source=node)


def _kernel_box(kernel: Any, i: int) -> Box:
    """A fused kernel: a compound box labelled with the kernel's name, holding one small box per member and the
    edges of its inner program (member ``j`` uses member ``k``'s value)."""
    node: Apply = kernel.node
    steps = _program_steps(node.op)
    members = tuple(member_view(m, step) for m, (step, _) in zip(kernel.members, steps))
    edges = tuple(dict.fromkeys((k, j) for j, (_, uses) in enumerate(steps) for k in uses))
    types = ", ".join(str(out.type) for out in node.outputs)
    inputs = ", ".join(f"in{k} = {v.label()}" for k, v in enumerate(kernel.inputs))
    gradient = sum(m.kind == "gradient" for m in members)
    title = f"fused kernel {kernel.name}: {len(members)} ops ({gradient} gradient) -> {types}\n{inputs}"
    lines = sorted({m.line for m in members if m.line})
    where = ", ".join(lines)
    return Box(f"n{i}", "kernel", str(kernel.name), types, title, where, members, edges, len(members), source=node)


def _program_steps(op: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Per member of a ``FusedElemwise`` (instructions, then reductions): its text (``t4 = mul(t0, t3)``) and the
    members whose values it uses. References below ``n_inputs`` name the kernel's inputs (``in0``)."""
    n = op.n_inputs

    def ref(r: int) -> str:
        return f"in{r}" if r < n else f"t{r - n}"

    steps = []
    for k, instruction in enumerate(op.program):
        args = ", ".join(ref(r) for r in instruction.args)
        uses = tuple(dict.fromkeys(r - n for r in instruction.args if r >= n))
        steps.append((f"t{k} = {instruction.op.describe()}({args})", uses))
    for result, reduction in zip(op.results, op.reductions):
        if reduction is not None:
            steps.append((f"{reduction.describe()}({ref(result)})", (result - n,) if result >= n else ()))
    return steps


def member_view(member: Any, step: str) -> Member:
    """A kernel member as drawn, from fusion's ``Member`` (op name, gradient flag, provenance) and its program text."""
    kind = "gradient" if member.gradient else "forward"
    where = provenance_text(member.provenance) if member.provenance is not None else f"@ {member.line}"
    return Member(member.op, kind, member.line, f"{step}\n{where}")


def _output_box(out: Variable, position: int, i: int, given: str | None = None) -> Box:
    """An output, labelled with the name the user gave it (or the variable's name, or its position)."""
    name = given or out.name or f"output {position}"
    title = f"output {position}: {name} = {out.label()} : {out.type}"
    return Box(f"n{i}", "output", _shorten(name), str(out.type), title, source=out)


def provenance_text(provenance: Provenance) -> str:
    """Every site that built a node, with its transforms (``pullback of tanh at f.py:3``), one per line."""
    lines = []
    for origin in provenance.origins:
        where = origin.site.describe() if origin.site is not None else "<unknown>"
        label = origin.notes()
        lines.append(f"@ {where}" + (f"  [{label}]" if label else ""))
    return "\n".join(lines)


def op_label(op: Any) -> str:
    """An op's name with its parameters, leaving out those that are False or None (``sum{axes=(0,)}``)."""
    shown = {k: v for k, v in op.params().items() if v is not False and v is not None}
    if not shown:
        return op.name
    return op.name + "{" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + "}"


def _line(provenance: Provenance) -> str:
    site = provenance.site
    return site.label if site is not None else ""


def _shorten(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


# -- transformations -------------------------------------------------------------------------------------------------
def hide_gradient(scene: Scene) -> Scene:
    """Drop gradient boxes (and gradient members of kernels) except those computing an output, and constants
    left without a visible user; inputs and outputs always stay."""
    keep: list[Box | None] = []
    hidden = 0
    for box in scene.boxes:
        if box.kind == "gradient" and not box.is_output:
            keep.append(None)
            hidden += 1
        elif box.kind == "kernel":
            forward = [k for k, m in enumerate(box.members) if m.kind == "forward"]
            hidden += len(box.members) - len(forward)
            if not forward and not box.is_output:
                keep.append(None)
            else:
                keep.append(_kernel_subset(box, forward) if forward else box)
        else:
            keep.append(box)
    used = {u for u, v in scene.edges if keep[u] is not None and keep[v] is not None}
    for i, box in enumerate(keep):
        if box is not None and box.kind == "constant" and i not in used:
            keep[i] = None
    result = _subscene(scene, keep)
    if hidden:
        result.notes.append(f"{hidden} gradient node(s) hidden")
    return result


def _kernel_subset(box: Box, kept: list[int]) -> Box:
    """A kernel box showing only the members ``kept`` (and the inner edges between them)."""
    position = {k: p for p, k in enumerate(kept)}
    edges = tuple((position[a], position[b]) for a, b in box.member_edges if a in position and b in position)
    members = tuple(box.members[k] for k in kept)
    return replace(box, members=members, member_edges=edges, count=len(members))


def _subscene(scene: Scene, keep: list[Box | None]) -> Scene:
    """The scene of the kept boxes (renumbered keys keep their original names) and the edges between them."""
    new_index: dict[int, int] = {}
    boxes: list[Box] = []
    for i, box in enumerate(keep):
        if box is not None:
            new_index[i] = len(boxes)
            boxes.append(box)
    edges = [(new_index[u], new_index[v]) for u, v in scene.edges if u in new_index and v in new_index]
    return Scene(boxes, edges, list(scene.notes))


def collapse(scene: Scene, limit: int) -> Scene:
    """Shrink a large scene: kernels drawn as single boxes, constants hidden, chains merged, then (if still too
    large) boxes of the same kind and user line within one layer merged. Each step is named in the caption."""
    total = sum(box.count for box in scene.boxes if box.kind in ("forward", "gradient", "kernel"))
    steps = []
    kernels = len(scene.kinds("kernel"))
    if kernels:
        scene = Scene([replace(b, members=(), member_edges=()) for b in scene.boxes], scene.edges, scene.notes)
        steps.append(f"{kernels} fused kernel(s) drawn as single boxes")
    constants = scene.kinds("constant")
    if constants:
        scene = _subscene(scene, [None if b.kind == "constant" else b for b in scene.boxes])
        steps.append(f"{len(constants)} constant(s) hidden")
    before = len(scene.boxes)
    scene = _merge(scene, _chain_groups(scene))
    if len(scene.boxes) < before:
        steps.append(f"chains of {MIN_CHAIN}+ single-use ops merged ({before - len(scene.boxes)} fewer boxes)")
    if len(scene.boxes) > limit:
        before = len(scene.boxes)
        scene, band = _band_merge(scene, limit)
        steps.append(f"ops of one kind in bands of {band} layer(s) merged ({before - len(scene.boxes)} fewer boxes)")
    scene.notes.insert(0, f"large graph ({total} ops) collapsed to {len(scene.boxes)} boxes: " + ", ".join(steps))
    return scene


def _degrees(scene: Scene) -> tuple[list[int], list[int]]:
    ins = [0] * len(scene.boxes)
    outs = [0] * len(scene.boxes)
    for u, v in scene.edges:
        outs[u] += 1
        ins[v] += 1
    return ins, outs


def _chain_groups(scene: Scene) -> list[int]:
    """Group id per box: maximal chains (each link the only edge out of one box and into the next, same kind,
    ops only) of at least ``MIN_CHAIN`` boxes share an id; every other box is its own group."""
    ins, outs = _degrees(scene)
    succ = [-1] * len(scene.boxes)
    for u, v in scene.edges:
        if outs[u] == 1 and ins[v] == 1 and scene.boxes[u].kind == scene.boxes[v].kind in ("forward", "gradient"):
            succ[u] = v
    has_pred = [False] * len(scene.boxes)
    for v in succ:
        if v >= 0:
            has_pred[v] = True
    group = list(range(len(scene.boxes)))
    for start in range(len(scene.boxes)):
        if has_pred[start] or succ[start] < 0:
            continue
        chain = [start]
        while succ[chain[-1]] >= 0:
            chain.append(succ[chain[-1]])
        if len(chain) >= MIN_CHAIN:
            for member in chain:
                group[member] = start
    return group


def _band_merge(scene: Scene, limit: int) -> tuple[Scene, int]:
    """Merge ops of one kind within bands of consecutive layers, doubling the band until at most ``limit`` boxes
    in at most ``MAX_LAYERS`` bands remain.

    Every edge goes to a later layer, so a path between two boxes of a band stays inside the band: merging whole
    bands keeps the scene acyclic. Splitting a band by kind could close a cycle (forward -> gradient -> forward
    within the band); then every band is merged whole instead."""
    layers = assign_layers(
        len(scene.boxes), scene.edges, scene.kinds("input"), scene.kinds("output"), scene.kinds("gradient")
    )
    deepest = max(layers, default=0)
    band = 1
    while True:
        group = _band_groups(scene, layers, band, by_kind=True)
        if not _acyclic(len(scene.boxes), _quotient_edges(scene.edges, group)):
            group = _band_groups(scene, layers, band, by_kind=False)
        if (len(set(group)) <= limit and deepest // band < MAX_LAYERS) or band > deepest:
            return _merge(scene, group, chains=False), band
        band *= 2


def _band_groups(scene: Scene, layers: list[int], band: int, by_kind: bool) -> list[int]:
    """Group id per box: ops (and kernels) in the same band of ``band`` layers (and of the same kind) share one."""
    first: dict[tuple[int, str], int] = {}
    group = list(range(len(scene.boxes)))
    for i, box in enumerate(scene.boxes):
        if box.kind in ("forward", "gradient", "kernel"):
            group[i] = first.setdefault((layers[i] // band, box.kind if by_kind else ""), i)
    return group


def _quotient_edges(edges: list[tuple[int, int]], group: list[int]) -> list[tuple[int, int]]:
    """The edges between groups (named by group id), without self-loops or repeats, in first-use order."""
    result: dict[tuple[int, int], None] = {}
    for u, v in edges:
        if group[u] != group[v]:
            result[(group[u], group[v])] = None
    return list(result)


def _acyclic(n: int, edges: list[tuple[int, int]]) -> bool:
    """Whether the edges over vertices ``0 .. n-1`` form no cycle."""
    succs: list[list[int]] = [[] for _ in range(n)]
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        succs[u].append(v)
        preds[v].append(u)
    try:
        topological_order(n, succs, preds)
    except ValueError:
        return False
    return True


def _merge(scene: Scene, group: list[int], chains: bool = True) -> Scene:
    """Merge boxes sharing a group id into one box (at the position of the group's first box); ``chains`` says
    the groups are chains (labelled by their first and last op) rather than sets (labelled by their commonest ops)."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    new_index: dict[int, int] = {}
    boxes: list[Box] = []
    for g, indices in members.items():
        for i in indices:
            new_index[i] = len(boxes)
        boxes.append(scene.boxes[g] if len(indices) == 1 else _merged_box([scene.boxes[i] for i in indices], chains))
    renumbered = [new_index[i] for i in range(len(group))]
    return Scene(boxes, _quotient_edges(scene.edges, renumbered), list(scene.notes))


def _merged_box(parts: list[Box], chain: bool) -> Box:
    """One box standing for several: a chain shows its first and last op, a set its commonest ops."""
    count = sum(p.count for p in parts)
    kinds: Counter[str] = Counter()
    for part in parts:
        kinds[part.kind] += part.count
    kind = kinds.most_common(1)[0][0]
    if chain:
        label = f"{parts[0].label} … {parts[-1].label}"
    else:
        label = ", ".join(op for op, _ in Counter(p.label for p in parts).most_common(2)) + " …"
    listing = "\n".join(f"  {p.label} ({p.kind}) @ {p.line}" for p in parts[:12])
    more = f"\n  … and {len(parts) - 12} more" if len(parts) > 12 else ""
    summary = " and ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    title = f"{summary} nodes collapsed into one box:\n{listing}{more}"
    where = ", ".join(sorted({p.line for p in parts if p.line}))
    outputs = any(p.is_output for p in parts)
    return Box(parts[0].key, kind, _shorten(label), f"×{count}", title, _shorten(where), count=count, is_output=outputs)
