"""``map_blocks``: an nbdiff ``Function`` applied to dask arrays chunk by chunk along their rows.

One task per row chunk calls the function once on chunk ``i`` of every chunked argument and on the in-memory
arguments (sent whole to every chunk); each output is then a dask array taken from those calls:

- an output with one entry per row (its leading dimension follows the rows: an elementwise result, a gradient
  with respect to the data, ``X @ w``) is chunked like the rows, its other dimensions and dtype from the graph;
- an output that does not follow the rows must be a sum, max or min over them (the graph's last op says which),
  combined over the chunks by a tree reduction; one that does not depend on the chunked data is taken from the
  first chunk. Any other (a mean, ``sum(x) ** 2``) is refused: ``row_cost`` handles means and costs.

The function must be row-wise, as for ``dask.array.map_blocks``: each row's results depend on that row only.
Which outputs follow the rows is found by running the function through the interpreter on two and three rows of
zeros (the dtypes and ranks come from the graph's types).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from nbdiff.dask.arguments import Arguments, split_arguments
from nbdiff.dask.shipping import ShippedFunction, ship
from nbdiff.errors import GraphError, NbdiffError, ShapeError, node_error
from nbdiff.function import Function, function
from nbdiff.graph.basic import Variable
from nbdiff.graph.traversal import depends_on
from nbdiff.graph.types import numpy_dtype
from nbdiff.ops.reduce import Max, Min, Sum

PROBE_ROWS = (2, 3)
SPLIT_EVERY = 8  # chunks combined per task in the tree reductions (dask's default for sums is 4 to 32)
_INTERPRETERS: weakref.WeakKeyDictionary[Function, Function] = weakref.WeakKeyDictionary()
_COMBINERS = {Sum: "sum", Max: "max", Min: "min"}


@dataclass(frozen=True)
class Layout:
    """How one output is assembled: ``"rows"`` (concatenated along axis 0) or combined ("sum", "max", "min",
    "first"); ``shape`` is the output's shape without its rows (rows) or its whole shape (combined)."""

    combine: str
    shape: tuple[int, ...]
    dtype: np.dtype


def map_blocks(f: Function, *args: Any) -> Any:
    """``f`` over dask arrays, chunk by chunk along axis 0: a dask array per output (a list where ``f`` returns one).

    Dask arrays are split along their rows (every other axis must be one chunk, and every dask argument chunked
    alike along the rows); other arguments go whole to every chunk. Nothing is computed until the result is.
    """
    where = f"map_blocks({f.name or 'function'})"
    arguments = split_arguments(f.inputs, args, where)
    layouts = output_layouts(f, arguments, where)
    calls = chunk_calls(ship(f), arguments, f.name or "function")
    outputs = [_assemble(calls, k, layout, arguments) for k, layout in enumerate(layouts)]
    return outputs if f.returns_list else outputs[0]


def chunk_calls(shipped: ShippedFunction, arguments: Arguments, name: str) -> Any:
    """A dask array of objects, one block per row chunk: the list of the function's outputs on that chunk."""
    import dask.array as da
    from dask.base import tokenize

    token = tokenize(shipped.key, *arguments.values)
    return da.blockwise(
        shipped,
        ("rows",),
        *arguments.blockwise_pairs(),
        name=f"nbdiff-{name}-{token}",
        dtype=object,
        meta=np.empty((0,), dtype=object),
        concatenate=True,
    )


def output_layouts(f: Function, arguments: Arguments, where: str) -> list[Layout]:
    """Each output's layout, from the interpreter's results on two and three rows of zeros."""
    small, large = (_probe(f, arguments, rows, where) for rows in PROBE_ROWS)
    chunked_inputs = [f.inputs[p] for p in arguments.chunked]
    dependent = depends_on(f.outputs, chunked_inputs)
    layouts = []
    for k, (var, a, b) in enumerate(zip(f.outputs, small, large)):
        dtype = numpy_dtype(var.dtype)
        if a.ndim >= 1 and (a.shape[0], b.shape[0]) == PROBE_ROWS and a.shape[1:] == b.shape[1:]:
            layouts.append(Layout("rows", a.shape[1:], dtype))
        elif a.shape == b.shape:
            combine = _combiner(var) if id(var) in dependent else "first"
            if combine is None:
                raise _not_combinable(where, k, var)
            layouts.append(Layout(combine, a.shape, dtype))
        else:
            detail = (
                f"output {k} ({var.label()}) has shape {a.shape} for {PROBE_ROWS[0]} rows and {b.shape} for "
                f"{PROBE_ROWS[1]}: map_blocks needs outputs with one entry per row, or none that depend on the rows"
            )
            raise node_error(ShapeError, where, detail, provenance=var.provenance)
    return layouts


def _combiner(var: Variable) -> str | None:
    """The reduction that combines per-chunk results of ``var``: the graph's last op, where it is a sum/max/min."""
    owner = var.owner
    return _COMBINERS.get(type(owner.op)) if owner is not None else None


def _not_combinable(where: str, k: int, var: Variable) -> NbdiffError:
    op = var.owner.op.name if var.owner is not None else "an input"
    detail = (
        f"output {k} ({var.label()}) reduces over the rows with {op}, which per-chunk results cannot be combined "
        f"into; map_blocks combines an output whose last op is sum, max or min. For a mean or a cost with "
        f"parameters use nd.dask.row_cost(terms, data, params, reduce='mean')"
    )
    return node_error(GraphError, where, detail, provenance=var.provenance)


def _probe(f: Function, arguments: Arguments, rows: int, where: str) -> list[np.ndarray]:
    """The interpreter's outputs of ``f`` with every chunked argument replaced by ``rows`` rows of zeros."""
    values = [
        np.zeros((rows, *value.shape[1:]), dtype=numpy_dtype(var.dtype)) if p in arguments.chunked else value
        for p, (var, value) in enumerate(zip(f.inputs, arguments.values))
    ]
    interpreter = _INTERPRETERS.get(f)
    if interpreter is None:
        interpreter = _INTERPRETERS[f] = function(f.inputs, list(f.outputs), backend="numpy", rewrites=f.rewrites)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return [np.asarray(out) for out in interpreter(*values)]
    except NbdiffError as exc:
        detail = f"running it on {rows} rows of zeros, to find which outputs follow the rows, failed:\n{exc}"
        raise node_error(ShapeError, where, detail) from exc


def _assemble(calls: Any, k: int, layout: Layout, arguments: Arguments) -> Any:
    """Output ``k`` as a dask array: concatenated along the rows, or combined over the chunks."""
    ndim = 1 + len(layout.shape)
    rows = arguments.row_chunks if layout.combine == "rows" else (1,) * arguments.blocks
    stacked = calls.map_blocks(
        _pick if layout.combine == "rows" else _pick_partial,
        k,
        chunks=(rows, *((d,) for d in layout.shape)),
        new_axis=list(range(1, ndim)),
        dtype=layout.dtype,
        meta=np.empty((0,) * ndim, dtype=layout.dtype),
    )
    if layout.combine == "rows":
        return stacked
    if layout.combine == "first":  # the same on every chunk: chunk 0's (slicing runs only chunk 0's call)
        return stacked[0]
    return getattr(stacked, layout.combine)(axis=0, split_every=SPLIT_EVERY)


def _pick(outputs: list, k: int) -> np.ndarray:
    return outputs[k]


def _pick_partial(outputs: list, k: int) -> np.ndarray:
    return np.asarray(outputs[k])[None]
