"""The graph view's drawing time: scene + layered layout + SVG text, for graphs of about 300 and 2,000 nodes.

Targets (issue 5): a 300-node graph lays out and draws in under 0.5 s; above about 500 boxes the view collapses
kernels, chains and layer bands, so a 2,000-node graph draws a few hundred boxes at most, also fast. Each
workload is a deterministic chain of unary ops, products and sums reusing earlier values, with its gradient
(``rewrites=False``, so the node count is the graph as built). Prints the median of the repeats per stage.

Run: ``python benchmarks/bench_widgets.py`` (``--quick`` for fewer repeats; ``--json PATH`` to save the figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import machine_info

import nbdiff as nd
from nbdiff.widgets.scene import COLLAPSE_ABOVE, build_scene
from nbdiff.widgets.svg import drawing_to_svg, layout_scene

TARGET_300_S = 0.5


def mixed_function(n_ops: int):
    """About ``4.5 * n_ops`` nodes: unary ops, products and sums of recent values, and the gradient."""
    x, w = nd.vector("x"), nd.vector("w")
    values = [x, w]
    unary = [nd.tanh, nd.sin, nd.exp, nd.cos, nd.sigmoid]
    for k in range(n_ops):
        a = values[-1]
        b = values[-1 - (k * 7) % min(len(values), 6)] if k > 1 else x
        values.append(unary[k % 5](a) if k % 3 == 0 else a * b if k % 3 == 1 else a + b)
    y = nd.sum(values[-1])
    return nd.function([x, w], [y, *nd.grad(y, [x, w])], rewrites=False, backend="numpy")


def time_stages(graph, repeats: int) -> dict:
    """Median seconds of each stage (scene, layout, SVG) and of the whole, plus the box count drawn."""
    stages: dict[str, list[float]] = {"scene": [], "layout": [], "svg": [], "total": []}
    boxes = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        scene = build_scene(graph)
        t1 = time.perf_counter()
        drawing = layout_scene(scene)
        t2 = time.perf_counter()
        svg = drawing_to_svg(drawing)
        t3 = time.perf_counter()
        assert svg.startswith('<svg class="nbdiff-graph"') and svg.endswith("</svg>")
        boxes = len(scene.boxes)
        for name, seconds in (("scene", t1 - t0), ("layout", t2 - t1), ("svg", t3 - t2), ("total", t3 - t0)):
            stages[name].append(seconds)
    result = {name: statistics.median(values) for name, values in stages.items()}
    result["boxes"] = boxes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 21")
    parser.add_argument("--json", metavar="PATH", help="save the figures as JSON")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21
    figures = {"machine": machine_info(), "workloads": {}}
    print(f"{'workload':<14} {'nodes':>6} {'boxes':>6} {'scene':>8} {'layout':>8} {'svg':>8} {'total':>8}  target")
    for label, n_ops in (("300 nodes", 67), ("2000 nodes", 445)):
        graph = mixed_function(n_ops).graph
        row = time_stages(graph, repeats)
        row["nodes"] = len(graph.nodes)
        target = f"< {TARGET_300_S} s" if n_ops == 67 else f"<= {COLLAPSE_ABOVE} boxes"
        print(
            f"{label:<14} {row['nodes']:>6} {row['boxes']:>6} {row['scene']:>8.3f} {row['layout']:>8.3f} "
            f"{row['svg']:>8.3f} {row['total']:>8.3f}  {target}"
        )
        figures["workloads"][label] = row
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
