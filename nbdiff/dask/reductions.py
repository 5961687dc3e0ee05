"""``row_cost``: a sum or mean of per-row terms over chunked data, with its gradient and Hessian-vector product.

The usual loss is ``mean(terms)`` where ``terms[i]`` depends on row ``i`` of the data and on in-memory parameters.
Per chunk, one compiled call gives the chunk's *sums*: ``sum(terms)``, its gradient with respect to the
parameters, or the Hessian-vector product of that sum. The chunks' sums are added by a tree reduction and divided
by the total number of rows once at the end, so a ragged last chunk weighs by its rows, and the result equals the
in-memory computation up to the order of float additions.

Each call packs its outputs into one row (``[sum, gradient...]``), so a chunk is one task whatever the number of
parameters, and the reduction adds rows of a small dask array.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Sequence

import numpy as np

from nbdiff.dask.arguments import Arguments, split_arguments
from nbdiff.dask.blocks import SPLIT_EVERY
from nbdiff.dask.shipping import ShippedFunction, ship
from nbdiff.errors import GradientError, InputError, node_error
from nbdiff.function import Function, function
from nbdiff.gradient import Rop, grad
from nbdiff.graph.basic import Constant, Variable
from nbdiff.graph.fgraph import Graph, check_function_inputs
from nbdiff.graph.types import FLOAT_DTYPES, numpy_dtype
from nbdiff.ops.reduce import sum as graph_sum
from nbdiff.variables import tensor

REDUCTIONS = ("mean", "sum")


class RowCost:
    """``reduce(terms)`` over chunked data: ``value``, ``grad``, ``value_and_grad`` and ``hvp`` as dask arrays.

    Call each with the data as dask arrays chunked along their rows (alike), then the parameters in memory, in the
    order given to ``row_cost``; ``hvp`` takes one tangent per parameter after them. Nothing is computed until the
    results are (``dask.compute(value, grad)`` shares the per-chunk calls).
    """

    def __init__(
        self,
        terms: Variable,
        data: list[Variable],
        params: list[Variable],
        reduce: str,
        many: bool,
        name: str,
        backend: str,
    ):
        self.terms = terms
        self.backend = backend
        self.data = data
        self.params = params
        self.reduce = reduce
        self.name = name
        self._many = many  # params was given as a list: gradients and products come back as lists
        self._total = graph_sum(terms)

    @cached_property
    def _gradients(self) -> list[Variable]:
        return grad(self._total, self.params)

    @cached_property
    def value_function(self) -> Function:
        """The per-chunk function ``(data..., params...) -> [sum of terms]``."""
        return self._function([*self.data, *self.params], [self._total], "value")

    @cached_property
    def gradient_function(self) -> Function:
        """The per-chunk function ``(data..., params...) -> [sum of terms, its gradient per parameter...]``."""
        return self._function([*self.data, *self.params], [self._total, *self._gradients], "grad")

    @cached_property
    def hvp_function(self) -> Function:
        """The per-chunk function ``(data..., params..., tangents...) -> [Hessian of the sum times the tangents]``."""
        tangents = [tensor(f"v_{p.name or k}", p.ndim, p.dtype, p.type.shape) for k, p in enumerate(self.params)]
        products = Rop(self._gradients, self.params, tangents)
        return self._function([*self.data, *self.params, *tangents], list(products), "hvp")

    def _function(self, inputs: list[Variable], outputs: list[Variable], what: str) -> Function:
        return function(inputs, outputs, backend=self.backend, name=f"{self.name}_{what}")

    def value(self, *args: Any) -> Any:
        """The cost: a 0-d dask array."""
        (value,) = self._reduced(self.value_function, args, [()], "value")
        return value

    def value_and_grad(self, *args: Any) -> tuple[Any, Any]:
        """The cost and its gradient (one dask array per parameter; a list where the parameters were a list)."""
        value, *grads = self._reduced(self.gradient_function, args, [(), *self._param_shapes(args)], "value_and_grad")
        return value, self._as_given(grads)

    def grad(self, *args: Any) -> Any:
        """The gradient with respect to the parameters."""
        return self.value_and_grad(*args)[1]

    def hvp(self, *args: Any) -> Any:
        """The Hessian-vector product: the arguments of ``value`` followed by one tangent per parameter."""
        products = self._reduced(self.hvp_function, args, self._param_shapes(args), "hvp")
        return self._as_given(products)

    # -- the reduction -----------------------------------------------------------------------------------------
    def _reduced(self, f: Function, args: Sequence[Any], shapes: list[tuple[int, ...]], what: str) -> list[Any]:
        """Each output of ``f``, summed over the chunks (divided by the rows for a mean), as dask arrays."""
        where = f"row_cost {self.name}.{what}"
        arguments = split_arguments(f.inputs, args, where, data=len(self.data))
        sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
        dtype = np.result_type(*(numpy_dtype(v.dtype) for v in f.outputs))
        packed = _packed_sums(ship(f), arguments, sum(sizes), dtype, f.name or "cost")
        total = packed.sum(axis=0, split_every=SPLIT_EVERY)
        if self.reduce == "mean":
            total = total / dtype.type(arguments.rows)
        results, offset = [], 0
        for shape, size in zip(shapes, sizes):
            results.append(total[offset : offset + size].reshape(shape))
            offset += size
        return results

    def _param_shapes(self, args: Sequence[Any]) -> list[tuple[int, ...]]:
        values = args[len(self.data) : len(self.data) + len(self.params)]
        return [tuple(np.shape(v)) for v in values]

    def _as_given(self, results: list[Any]) -> Any:
        return results if self._many else results[0]

    def __repr__(self) -> str:
        data = ", ".join(v.label() for v in self.data)
        params = ", ".join(v.label() for v in self.params)
        return f"<nbdiff.dask.RowCost {self.name}: {self.reduce} over rows of ({data}), parameters ({params})>"


def row_cost(
    terms: Variable,
    data: Variable | Sequence[Variable],
    params: Variable | Sequence[Variable],
    reduce: str = "mean",
    name: str = "cost",
    backend: str = "auto",
) -> RowCost:
    """A cost ``reduce(terms)`` (``"mean"`` or ``"sum"``) over chunked ``data``, differentiable in ``params``.

    ``terms`` is a vector with one entry per row of the data (row ``i``'s term may depend on row ``i`` of every data
    variable and on the parameters, not on other rows). ``params`` may be one variable (gradients come back as one
    array) or a list (lists come back). ``backend`` is the per-chunk functions' (``nd.function``'s) backend; each
    worker compiles them in the background.
    """
    data_list = list(data) if isinstance(data, (list, tuple)) else [data]
    many = isinstance(params, (list, tuple))
    param_list = list(params) if many else [params]
    where = f"row_cost {name}"
    if reduce not in REDUCTIONS:
        raise node_error(InputError, where, f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if not isinstance(terms, Variable) or terms.ndim != 1:
        shape = getattr(getattr(terms, "type", None), "describe", lambda: type(terms).__name__)()
        detail = f"terms must be a vector with one entry per row of the data, got {shape}"
        raise node_error(GradientError, where, detail)
    if terms.dtype not in FLOAT_DTYPES:
        raise node_error(GradientError, where, f"terms must be floating point to differentiate, got {terms.dtype}")
    for var in [*data_list, *param_list]:
        if not isinstance(var, Variable) or var.owner is not None or isinstance(var, Constant):
            raise node_error(InputError, where, f"data and params must be input variables, got {var!r}")
    for var in data_list:
        if var.ndim == 0:
            raise node_error(InputError, where, f"data variable {var.label()} is 0-d: it has no rows to chunk")
    Graph(check_function_inputs([*data_list, *param_list]), [terms])  # a MissingInputError now, not at first use
    return RowCost(terms, data_list, param_list, reduce, many, name, backend)


def _packed_sums(shipped: ShippedFunction, arguments: Arguments, length: int, dtype: np.dtype, name: str) -> Any:
    """A dask array of shape (chunks, length): row ``i`` holds chunk ``i``'s outputs, flattened one after another."""
    import dask.array as da
    from dask.base import tokenize

    return da.blockwise(
        _chunk_sums,
        ("rows", "packed"),
        shipped,
        None,
        dtype,
        None,
        *arguments.blockwise_pairs(),
        new_axes={"packed": length},
        adjust_chunks={"rows": 1},
        name=f"nbdiff-{name}-{tokenize(shipped.key, *arguments.values)}",
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        concatenate=True,
    )


def _chunk_sums(shipped: ShippedFunction, dtype: np.dtype, *args: Any) -> np.ndarray:
    """One chunk's outputs, flattened into one row (the task a row chunk runs)."""
    outputs = shipped(*args)
    return np.concatenate([np.ravel(np.asarray(out, dtype=dtype)) for out in outputs])[None, :]
