"""A deterministic layered layout (Sugiyama style) for drawing a DAG top to bottom, in near-linear time.

Four steps, each over plain integer indices (no graph objects, so it is easy to test and to time):

1. **Layers**: longest path from the sources; sources that are not pinned to the top (constants) move down to
   just above their first user, and sinks pinned to the bottom (outputs) share the last layer.
2. **Dummies**: an edge spanning several layers gets one dummy vertex per layer it crosses, so it can bend around
   boxes. Dummies are limited to a budget proportional to the graph; edges beyond it are drawn as direct curves.
3. **Order**: a few alternating barycenter sweeps reduce crossings; the order with the fewest crossings (counted
   exactly, ``O(E log V)`` per pair of layers) is kept. Ties break on the previous position, so the result
   depends only on the input lists.
4. **Coordinates**: each node is pulled toward the mean of its neighbours' centres, then overlaps are removed by
   isotonic regression (pool adjacent violators), which keeps every layer's order and minimum gaps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

H_GAP = 16.0  # horizontal space between boxes
V_GAP = 40.0  # vertical space between layers
MARGIN = 12.0
SWEEPS = 6  # barycenter sweeps (down, up, down, ...)
COORDINATE_PASSES = 6
DUMMY_BUDGET_PER_NODE = 4  # at most this many dummy vertices per real node in all


@dataclass
class Layout:
    """Where each box goes (left/top corner), its layer, and each edge's route as a polyline of points.

    ``routes[k]`` belongs to ``edges[k]`` of the input. A route starts at the bottom centre of the source box and
    ends at the top centre of the target box; consecutive points alternate between vertical runs through a layer
    and gaps between layers, which the SVG writer draws as curves.
    """

    x: list[float]
    y: list[float]
    widths: list[float]
    heights: list[float]
    layers: list[int]
    routes: list[list[tuple[float, float]]]
    width: float
    height: float

    def center(self, index: int) -> tuple[float, float]:
        return self.x[index] + self.widths[index] / 2, self.y[index] + self.heights[index] / 2


def layered_layout(
    sizes: Sequence[tuple[float, float]],
    edges: Sequence[tuple[int, int]],
    top: Sequence[int] = (),
    bottom: Sequence[int] = (),
    late: Sequence[int] = (),
    h_gap: float = H_GAP,
    v_gap: float = V_GAP,
) -> Layout:
    """Lay out boxes of the given ``(width, height)`` connected by ``edges`` (source, target) top to bottom.

    ``top`` lists sources kept on the first layer (inputs); ``bottom`` lists sinks put on the last (outputs);
    ``late`` lists vertices placed as low as their users allow (gradient nodes, next to what they feed).
    ``h_gap`` and ``v_gap`` are the least space between boxes of a layer and between layers.
    The graph must be acyclic; the result depends only on the arguments (their order included).
    """
    n = len(sizes)
    layers = assign_layers(n, edges, top, bottom, late)
    grid = _Grid.build(layers, edges, n)
    grid.order()
    widths = [float(w) for w, _ in sizes] + [0.0] * grid.dummies
    heights = [float(h) for _, h in sizes] + [0.0] * grid.dummies
    centers = grid.coordinates(widths, h_gap)
    tops, layer_heights = _layer_tops(grid.rows, heights, v_gap)
    left = min((centers[v] - widths[v] / 2 for v in range(len(centers))), default=0.0)
    shift = MARGIN - left
    x = [centers[v] + shift - widths[v] / 2 for v in range(n)]
    y = [tops[layers[v]] for v in range(n)]
    routes = []
    for k, (u, v) in enumerate(edges):
        points = [(centers[u] + shift, y[u] + heights[u])]
        for d in grid.chains[k]:
            layer = grid.layer_of[d]
            points.append((centers[d] + shift, tops[layer]))
            points.append((centers[d] + shift, tops[layer] + layer_heights[layer]))
        points.append((centers[v] + shift, y[v]))
        routes.append(points)
    width = max((centers[v] + shift + widths[v] / 2 for v in range(len(centers))), default=0.0) + MARGIN
    height = (tops[-1] + layer_heights[-1] + MARGIN) if tops else 2 * MARGIN
    return Layout(x, y, widths[:n], heights[:n], layers, routes, width, height)


def assign_layers(
    n: int,
    edges: Sequence[tuple[int, int]],
    top: Sequence[int] = (),
    bottom: Sequence[int] = (),
    late: Sequence[int] = (),
) -> list[int]:
    """Layer of each vertex: longest path from the sources; unpinned sources and ``late`` vertices then move down
    to just above their first user (in reverse topological order, so a moved vertex makes room for its feeders)."""
    succs: list[list[int]] = [[] for _ in range(n)]
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        succs[u].append(v)
        preds[v].append(u)
    order = topological_order(n, succs, preds)
    layer = [0] * n
    for v in order:
        for u in preds[v]:
            layer[v] = max(layer[v], layer[u] + 1)
    pinned_top = set(top)
    lowered = set(late)
    for v in reversed(order):
        if succs[v] and v not in pinned_top and (not preds[v] or v in lowered):
            layer[v] = min(layer[s] for s in succs[v]) - 1
    if bottom:
        last = max(layer)
        for v in bottom:
            if not succs[v]:
                layer[v] = last
    return layer


def topological_order(n: int, succs: Sequence[Sequence[int]], preds: Sequence[Sequence[int]]) -> list[int]:
    """Kahn's algorithm, seeded and continued in index order (deterministic); raises on a cycle."""
    remaining = [len(p) for p in preds]
    queue = deque(v for v in range(n) if remaining[v] == 0)
    order: list[int] = []
    while queue:
        u = queue.popleft()
        order.append(u)
        for v in succs[u]:
            remaining[v] -= 1
            if remaining[v] == 0:
                queue.append(v)
    if len(order) != n:
        raise ValueError(f"layered_layout needs an acyclic graph; {n - len(order)} vertices lie on cycles")
    return order


@dataclass
class _Grid:
    """Vertices (real, then dummies) arranged in rows (layers), with the unit-span links between rows."""

    rows: list[list[int]]
    layer_of: list[int]
    down: list[list[int]]  # links to the next layer
    up: list[list[int]]  # links to the previous layer
    chains: list[list[int]]  # per input edge, its dummy vertices top to bottom
    dummies: int

    @classmethod
    def build(cls, layers: list[int], edges: Sequence[tuple[int, int]], n: int) -> _Grid:
        layer_of = list(layers)
        down: list[list[int]] = [[] for _ in range(n)]
        up: list[list[int]] = [[] for _ in range(n)]
        chains: list[list[int]] = []
        budget = DUMMY_BUDGET_PER_NODE * n
        spans = sorted(range(len(edges)), key=lambda k: (layers[edges[k][1]] - layers[edges[k][0]], k))
        granted = set()
        for k in spans:  # shortest edges get their dummies first
            span = layers[edges[k][1]] - layers[edges[k][0]]
            if span - 1 > budget:
                break
            budget -= max(span - 1, 0)
            granted.add(k)
        for k, (u, v) in enumerate(edges):
            chain: list[int] = []
            if k in granted:
                previous = u
                for layer in range(layers[u] + 1, layers[v]):
                    d = len(layer_of)
                    layer_of.append(layer)
                    down.append([])
                    up.append([])
                    chain.append(d)
                    down[previous].append(d)
                    up[d].append(previous)
                    previous = d
                down[previous].append(v)
                up[v].append(previous)
            chains.append(chain)
        rows: list[list[int]] = [[] for _ in range(max(layer_of, default=-1) + 1)]
        for v, layer in enumerate(layer_of):
            rows[layer].append(v)
        return cls(rows, layer_of, down, up, chains, len(layer_of) - n)

    def order(self) -> None:
        """Barycenter sweeps; keeps the row orders with the fewest crossings."""
        position = self._positions()
        best_rows = [list(r) for r in self.rows]
        best = self.crossings(position)
        for sweep in range(SWEEPS):
            downward = sweep % 2 == 0
            indices = range(1, len(self.rows)) if downward else range(len(self.rows) - 2, -1, -1)
            for i in indices:
                fixed = self.up if downward else self.down
                self.rows[i].sort(key=lambda v: (_barycenter(fixed[v], position, position[v]), position[v]))
                for p, v in enumerate(self.rows[i]):
                    position[v] = p
            count = self.crossings(position)
            if count < best:
                best, best_rows = count, [list(r) for r in self.rows]
            if best == 0:
                break
        self.rows = best_rows

    def _positions(self) -> list[int]:
        position = [0] * len(self.layer_of)
        for row in self.rows:
            for p, v in enumerate(row):
                position[v] = p
        return position

    def crossings(self, position: list[int]) -> int:
        """Exact number of crossings between consecutive rows (inversions counted with a Fenwick tree)."""
        total = 0
        for row, below in zip(self.rows, self.rows[1:]):
            targets = sorted((position[u], position[v]) for u in row for v in self.down[u])
            tree = [0] * (len(below) + 1)
            seen = 0
            for _, target in targets:
                i = target + 1  # count earlier links ending strictly right of this one
                not_greater = 0
                while i > 0:
                    not_greater += tree[i]
                    i -= i & -i
                total += seen - not_greater
                i = target + 1
                while i <= len(below):
                    tree[i] += 1
                    i += i & -i
                seen += 1
        return total

    def coordinates(self, widths: list[float], gap: float) -> list[float]:
        """Centre x of every vertex: rows packed, then pulled toward neighbours with order-preserving gaps."""
        center = [0.0] * len(self.layer_of)
        for row in self.rows:
            cursor = 0.0
            for v in row:
                center[v] = cursor + widths[v] / 2
                cursor += widths[v] + gap
        for sweep in range(COORDINATE_PASSES):
            downward = sweep % 2 == 0
            indices = range(1, len(self.rows)) if downward else range(len(self.rows) - 2, -1, -1)
            neighbours = self.up if downward else self.down
            for i in indices:
                row = self.rows[i]
                wanted = [_mean([center[u] for u in neighbours[v]], center[v]) for v in row]
                for v, x in zip(row, _spread(wanted, [widths[v] for v in row], gap)):
                    center[v] = x
        return center


def _barycenter(neighbours: list[int], position: list[int], own: int) -> float:
    if not neighbours:
        return float(own)
    return sum(position[u] for u in neighbours) / len(neighbours)


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _spread(wanted: list[float], widths: list[float], gap: float) -> list[float]:
    """Centres closest (least squares) to ``wanted`` that keep this order and at least ``gap`` between boxes.

    With ``offset[i]`` the least distance from box 0's centre to box i's, the problem is isotonic regression of
    ``wanted[i] - offset[i]``, solved in linear time by pooling adjacent violators.
    """
    offsets = [0.0]
    for i in range(1, len(widths)):
        offsets.append(offsets[-1] + (widths[i - 1] + widths[i]) / 2 + gap)
    blocks: list[list[float]] = []  # [mean, count]
    for target, offset in zip(wanted, offsets):
        blocks.append([target - offset, 1.0])
        while len(blocks) > 1 and blocks[-2][0] >= blocks[-1][0]:
            mean, count = blocks.pop()
            previous = blocks[-1]
            previous[0] = (previous[0] * previous[1] + mean * count) / (previous[1] + count)
            previous[1] += count
    result: list[float] = []
    for mean, count in blocks:
        result.extend([mean] * int(count))
    return [value + offset for value, offset in zip(result, offsets)]


def _layer_tops(rows: list[list[int]], heights: list[float], gap: float) -> tuple[list[float], list[float]]:
    """Top y of each layer and its height (its tallest box)."""
    tops: list[float] = []
    layer_heights: list[float] = []
    cursor = MARGIN
    for row in rows:
        tall = max((heights[v] for v in row), default=0.0)
        tops.append(cursor)
        layer_heights.append(tall)
        cursor += tall + gap
    return tops, layer_heights
