"""Graph sizes after nbdiff's rewrites against PyTensor's, and the interpreter on rewritten vs unrewritten graphs.

Workloads (each built in nbdiff and in PyTensor; both must compute the same values on small inputs before anything
is counted or timed):
  W1    value + gradient of sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x))
  HVP   Hessian-vector product of W1. nbdiff: Rop(grad(W1), x, v) (forward over reverse). PyTensor, two rows:
        pushforward(grad(W1), x, v) (its Rop) and hessian_vector_product(W1, x, v) (grad of sum(grad * v))
  MLP   float32 step 256x784 -> 256 relu -> 10, log_softmax cross-entropy through take_along_axis, gradients of
        all four parameters (the step of benchmarks/bench_interpreter.py)
  H20   Hessian of a 20-op elementwise expression in four scalars p[0..3] (p of static shape (4,)). nbdiff:
        nd.hessian (unrolled rows). PyTensor, two rows: pytensor.gradient.hessian (a Scan; its loop body is counted)
        and jacobian(grad, p, vectorize=True)

Table 1 (graph sizes): nbdiff nodes as written, after rewriting, fused kernels, the passes that changed the graph;
PyTensor's nodes after its default rewrites (its default mode: FAST_RUN rewrites; the linker does not change the
count), how many of those are fused Composite nodes, nodes inside loop bodies (Scan), and the verdict
"nbdiff <= PyTensor" (nbdiff after rewriting against PyTensor's outer plus loop-body nodes).
Where nbdiff is larger, the op names left in its rewritten graph are listed (``--dprint`` prints the whole graph).

Table 2 (interpreter): medians of interleaved runs of the rewritten graph and of the same function built with
``rewrites=False``, per call, and their ratio (target <= 1).

Run: ``python benchmarks/bench_rewrites.py`` (``--quick`` for fewer repeats, ``--json PATH`` to save the figures,
``--no-pytensor`` to skip the comparison, which compiles with PyTensor: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from bench_interpreter import mlp_args, mlp_outputs
from common import interleaved, machine_info

import nbdiff as nd

Builder = Callable[[], tuple[list, list]]


@dataclass
class Workload:
    """One function, built in nbdiff and (in one or more idiomatic ways) in PyTensor."""

    name: str
    nbdiff: Builder
    pytensor: dict[str, Builder]
    small_args: tuple
    timing_args: Callable[[], tuple]
    timed_at: str
    rtol: float = 1e-10
    atol: float = 1e-12
    calls_per_sample: int = 1
    notes: dict[str, Any] = field(default_factory=dict)


# -- the functions, written once for both libraries (nd and pytensor.tensor share these NumPy names) -------------
def w1_expression(ns: Any, x: Any) -> Any:
    """sum(tanh(x)*exp(-x^2) + log1p(x^2)*sin(3x)) with the functions of namespace ``ns`` (nd or pt)."""
    return ns.sum(ns.tanh(x) * ns.exp(-(x**2)) + ns.log1p(x**2) * ns.sin(3 * x))


def expr20(ns: Any, p: Any) -> Any:
    """A 20-op elementwise expression in the scalars p[0], p[1], p[2], p[3]."""
    a, b, c, d = p[0], p[1], p[2], p[3]
    return (
        ns.sin(a * b) + ns.exp(-(c * c)) * ns.tanh(d) + ns.log1p(a * a + b * b) * ns.cos(c * d) - (a - d) / (b * b + 1)
    )


def nd_w1() -> tuple[list, list]:
    x = nd.vector("x")
    y = w1_expression(nd, x)
    return [x], [y, nd.grad(y, x)]


def nd_hvp() -> tuple[list, list]:
    x, v = nd.vector("x"), nd.vector("v")
    return [x, v], [nd.Rop(nd.grad(w1_expression(nd, x), x), x, v)]


def nd_h20() -> tuple[list, list]:
    p = nd.vector("p", shape=(4,))
    return [p], [nd.hessian(expr20(nd, p), p)]


def pt_w1() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    x = pt.vector("x")
    y = w1_expression(pt, x)
    return [x], [y, grad(y, x)]


def pt_hvp_pushforward() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import grad, pushforward

    x, v = pt.vector("x"), pt.vector("v")
    return [x, v], [pushforward(grad(w1_expression(pt, x), x), x, v)]


def pt_hvp_product() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import hessian_vector_product

    x, v = pt.vector("x"), pt.vector("v")
    return [x, v], [hessian_vector_product(w1_expression(pt, x), x, v)]


def pt_mlp() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    X, labels = pt.matrix("X", dtype="float32"), pt.vector("labels", dtype="int64")
    W1, b1 = pt.matrix("W1", dtype="float32"), pt.vector("b1", dtype="float32")
    W2, b2 = pt.matrix("W2", dtype="float32"), pt.vector("b2", dtype="float32")
    hidden = pt.maximum(X @ W1 + b1, 0)
    log_probs = pt.special.log_softmax(hidden @ W2 + b2, axis=1)
    loss = -pt.mean(pt.take_along_axis(log_probs, pt.expand_dims(labels, 1), axis=1))
    return [X, labels, W1, b1, W2, b2], [loss, *grad(loss, [W1, b1, W2, b2])]


def pt_h20_scan() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import hessian

    p = pt.vector("p", shape=(4,))
    return [p], [hessian(expr20(pt, p), p)]


def pt_h20_vectorized() -> tuple[list, list]:
    import pytensor.tensor as pt
    from pytensor.gradient import grad, jacobian

    p = pt.vector("p", shape=(4,))
    return [p], [jacobian(grad(expr20(pt, p), p), p, vectorize=True)]


def workloads(n: int) -> list[Workload]:
    """The four workloads; ``n`` is the vector length W1 and HVP are timed at."""
    rng = np.random.default_rng(0)
    small_x, small_v = rng.uniform(-2, 2, 9), rng.standard_normal(9)
    return [
        Workload(
            "W1 value+grad",
            nd_w1,
            {"grad": pt_w1},
            (small_x,),
            lambda: (np.random.default_rng(1).uniform(-2, 2, n),),
            f"n={n:.0e}",
        ),
        Workload(
            "HVP of W1",
            nd_hvp,
            {"pushforward": pt_hvp_pushforward, "hessian_vector_product": pt_hvp_product},
            (small_x, small_v),
            lambda: (np.random.default_rng(2).uniform(-2, 2, n), np.random.default_rng(3).standard_normal(n)),
            f"n={n:.0e}",
            rtol=1e-9,
        ),
        Workload(
            "MLP float32 step",
            mlp_outputs,
            {"grad": pt_mlp},
            mlp_args(np.random.default_rng(4), 8, 12, 6, 3),
            lambda: mlp_args(np.random.default_rng(5), 256, 784, 256, 10),
            "batch 256",
            rtol=1e-4,
            atol=1e-6,
        ),
        Workload(
            "20-op Hessian",
            nd_h20,
            {"hessian (Scan)": pt_h20_scan, "jacobian vectorize": pt_h20_vectorized},
            (np.array([0.3, -0.7, 1.1, 0.5]),),
            lambda: (np.array([0.9, 0.2, -0.4, 1.3]),),
            "200 calls/sample",
            calls_per_sample=200,
        ),
    ]


# -- checking and counting ----------------------------------------------------------------------------------------
def check_same(what: str, got: Sequence[Any], expected: Sequence[Any], rtol: float, atol: float) -> None:
    """Raise if two lists of outputs differ in number, shape or value (the benchmark refuses to count wrong code)."""
    if len(got) != len(expected):
        raise RuntimeError(f"{what}: {len(got)} outputs, expected {len(expected)}")
    for position, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        if g.shape != e.shape or not np.allclose(g, e, rtol=rtol, atol=atol):
            worst = np.max(np.abs(g - e)) if g.shape == e.shape else f"shapes {g.shape} vs {e.shape}"
            raise RuntimeError(f"{what}: output {position} differs (max abs difference {worst})")


def nbdiff_functions(work: Workload) -> tuple[nd.Function, nd.Function]:
    """The workload with nbdiff's default rewrites and with ``rewrites=False``, checked to agree."""
    inputs, outputs = work.nbdiff()
    rewritten = nd.function(inputs, outputs, backend="numpy")
    unrewritten = nd.function(inputs, outputs, rewrites=False, backend="numpy")
    check_same(
        f"{work.name}: rewritten vs unrewritten",
        rewritten(*work.small_args),
        unrewritten(*work.small_args),
        work.rtol,
        work.atol,
    )
    return rewritten, unrewritten


def nbdiff_sizes(rewritten: nd.Function) -> dict:
    """Node counts before and after rewriting, fused kernels, and the passes that changed the graph."""
    return {
        "nodes_as_written": len(rewritten.graph_as_written.nodes),
        "nodes_rewritten": len(rewritten.graph.nodes),
        "kernels": len(rewritten.kernels),
        "passes_changed": [record.name for record in rewritten.history if record.changed],
        "ops_left": dict(Counter(node.op.name for node in rewritten.graph.nodes).most_common()),
    }


def pytensor_mode_label() -> str:
    """PyTensor's version and default mode: the rewrites every count below is taken after, and the linker."""
    import pytensor
    from pytensor.compile.mode import get_default_mode

    mode = get_default_mode()
    query = mode.provided_optimizer
    tags = "+".join(getattr(query, "include", [])) or str(query)
    return f"PyTensor {pytensor.__version__}, default mode ({tags} rewrites, {type(mode.linker).__name__})"


def loop_bodies(nodes: Any) -> list[Any]:
    """The inner graphs of the Scan loops among ``nodes`` (single ops that carry a decomposition, such as Softmax,
    are not loops and count as one node)."""
    from pytensor.scan.op import Scan

    return [node.op.fgraph for node in nodes if isinstance(node.op, Scan)]


def pytensor_sizes(fn: Any) -> dict:
    """Apply nodes of a compiled PyTensor function, its fused Composite nodes, and nodes inside loop bodies."""
    from pytensor.scalar.basic import Composite

    nodes = fn.maker.fgraph.apply_nodes
    fused = sum(isinstance(getattr(node.op, "scalar_op", None), Composite) for node in nodes)
    inner, pending = 0, loop_bodies(nodes)
    while pending:
        body = pending.pop()
        inner += len(body.apply_nodes)
        pending.extend(loop_bodies(body.apply_nodes))
    ops = Counter(type(node.op).__name__ for node in nodes)
    return {
        "nodes": len(nodes),
        "fused": fused,
        "loop_body_nodes": inner,
        "total": len(nodes) + inner,
        "ops": dict(ops.most_common()),
    }


def compare_with_pytensor(work: Workload, reference: Sequence[Any]) -> dict[str, dict]:
    """Compile each PyTensor formulation, check it against nbdiff's values, and count its rewritten graph."""
    import pytensor

    rows = {}
    for label, build in work.pytensor.items():
        with warnings.catch_warnings():  # PyTensor's own deprecation notes and Numba performance hints
            warnings.simplefilter("ignore")
            inputs, outputs = build()
            fn = pytensor.function(inputs, outputs)
            values = fn(*work.small_args)
        check_same(f"{work.name}: PyTensor {label} vs nbdiff", values, reference, work.rtol, work.atol)
        rows[label] = pytensor_sizes(fn)
    return rows


# -- timing -------------------------------------------------------------------------------------------------------
def time_rewritten(work: Workload, rewritten: nd.Function, unrewritten: nd.Function, repeats: int) -> dict:
    """Interleaved medians per call of the rewritten and unrewritten graphs on the timing inputs."""
    args = work.timing_args()
    check_same(
        f"{work.name} (timing inputs): rewritten vs unrewritten",
        rewritten(*args),
        unrewritten(*args),
        work.rtol,
        work.atol,
    )
    calls = work.calls_per_sample

    def run(fn: nd.Function) -> Callable[[], None]:
        def sample() -> None:
            for _ in range(calls):
                fn(*args)

        return sample

    t_rw, t_raw = interleaved(run(rewritten), run(unrewritten), repeats)
    return {
        "timed_at": work.timed_at,
        "rewritten_s": t_rw / calls,
        "unrewritten_s": t_raw / calls,
        "ratio": t_rw / t_raw,
        "target": 1.0,
    }


# -- reporting ----------------------------------------------------------------------------------------------------
def print_sizes(sizes: dict, pytensor_label: str | None) -> None:
    """Table 1: graph sizes, one line per PyTensor formulation."""
    print("Graph sizes: nbdiff (as written -> rewritten, fused kernels) against " + (pytensor_label or "no PyTensor"))
    head = f"{'workload':18s} {'written':>7s} {'rewrit.':>7s} {'kernels':>7s}  {'PyTensor formulation':24s}"
    print(head + f" {'pt nodes':>8s} {'fused':>5s} {'loop':>5s}  nbdiff<=PyTensor")
    for name, entry in sizes.items():
        nb = entry["nbdiff"]
        lead = f"{name:18s} {nb['nodes_as_written']:7d} {nb['nodes_rewritten']:7d} {nb['kernels']:7d}"
        rows = entry.get("pytensor") or {"(not compared)": None}
        for label, row in rows.items():
            if row is None:
                print(f"{lead}  {label:24s}")
            else:
                verdict = "yes" if nb["nodes_rewritten"] <= row["total"] else "NO"
                print(f"{lead}  {label:24s} {row['nodes']:8d} {row['fused']:5d} {row['loop_body_nodes']:5d}  {verdict}")
            lead = " " * len(lead)
    for name, entry in sizes.items():
        print(f"  {name}: passes that changed the graph: {', '.join(entry['nbdiff']['passes_changed']) or 'none'}")


def print_larger(sizes: dict, functions: dict[str, nd.Function], full: bool) -> None:
    """For each workload where nbdiff's rewritten graph is larger than a PyTensor one, what is left in it."""
    for name, entry in sizes.items():
        nb, rows = entry["nbdiff"], entry.get("pytensor") or {}
        smallest = min((row["total"] for row in rows.values()), default=None)
        if smallest is None or nb["nodes_rewritten"] <= smallest:
            continue
        print(f"\n{name}: nbdiff has {nb['nodes_rewritten']} nodes, PyTensor {smallest}. Ops left in nbdiff's graph:")
        print("  " + ", ".join(f"{op} x{count}" for op, count in nb["ops_left"].items()))
        if full:
            nd.dprint(functions[name])


def print_timings(timings: dict, repeats: int) -> None:
    """Table 2: the interpreter on the rewritten graph against the unrewritten one."""
    print(f"\nInterpreter, rewritten vs rewrites=False (medians of {repeats} interleaved samples, per call)")
    print(f"{'workload':18s} {'timed at':16s} {'rewritten':>12s} {'unrewritten':>12s} {'ratio':>7s}  target <= 1")
    for name, r in timings.items():
        verdict = "yes" if r["ratio"] <= r["target"] else "NO"
        times = f"{r['rewritten_s'] * 1e3:10.3f}ms {r['unrewritten_s'] * 1e3:10.3f}ms"
        print(f"{name:18s} {r['timed_at']:16s} {times} {r['ratio']:7.2f}  {verdict}")


def pytensor_available() -> bool:
    """Whether PyTensor imports (it is in the ``bench`` extra)."""
    try:
        import pytensor  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--no-pytensor", action="store_true", help="skip the comparison with PyTensor")
    parser.add_argument("--dprint", action="store_true", help="print nbdiff's graph where it is larger than PyTensor's")
    args = parser.parse_args()
    repeats = 5 if args.quick else 21
    n = 1_000_000
    use_pytensor = not args.no_pytensor and pytensor_available()
    if not args.no_pytensor and not use_pytensor:
        print("PyTensor is not installed (pip install -e .[bench]): graph sizes are printed without the comparison")
    pytensor_label = pytensor_mode_label() if use_pytensor else None

    sizes, timings, functions = {}, {}, {}
    for work in workloads(n):
        rewritten, unrewritten = nbdiff_functions(work)
        functions[work.name] = rewritten
        entry = {"nbdiff": nbdiff_sizes(rewritten)}
        if use_pytensor:
            entry["pytensor"] = compare_with_pytensor(work, rewritten(*work.small_args))
        sizes[work.name] = entry
        timings[work.name] = time_rewritten(work, rewritten, unrewritten, repeats)

    print_sizes(sizes, pytensor_label)
    print_larger(sizes, functions, args.dprint)
    print_timings(timings, repeats)
    if args.json:
        results = {"machine": machine_info(), "pytensor": pytensor_label, "sizes": sizes, "timings": timings}
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
