"""The graph: typed ``Variable``s, ``Constant``s and immutable, hash-consed ``Apply`` nodes, and the ``Op`` contract.

Building the same op on the same inputs twice returns the same ``Apply`` node (hash-consing), so common
subexpressions merge for free and nodes can be dict keys. Each node keeps the provenance of every site that built it.
"""

from __future__ import annotations

import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from nbdiff.errors import DTypeError, GraphError, ShapeError, node_error
from nbdiff.graph.provenance import Origin, Provenance, current_origin, inherited_origins
from nbdiff.graph.types import TensorType, as_dtype, is_float, max_ndim, ndim_limit_detail

if TYPE_CHECKING:  # pragma: no cover
    from nbdiff.gradient import GradResult


class Variable:
    """A typed value in a graph: a user input (no owner) or the output ``index`` of an ``Apply`` node.

    Operators follow NumPy (``+ - * / ** @``, comparisons, indexing). Variables hash by identity, so they can be
    dict keys even though ``==`` builds an elementwise comparison node.
    """

    __slots__ = ("type", "owner", "index", "name", "_provenance", "__weakref__")
    __array_ufunc__ = None  # make ``ndarray * Variable`` defer to ``Variable.__rmul__``
    __hash__ = object.__hash__

    def __init__(self, type: TensorType, owner: Apply | None = None, index: int = 0, name: str | None = None):
        self.type = type
        self.owner = owner
        self.index = index
        self.name = name
        self._provenance = Provenance([current_origin()]) if owner is None else None

    # -- static information -------------------------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def shape(self) -> tuple:
        """The shape as values: a Python int per known dimension, an int64 graph scalar (``x.shape[i]`` is
        ``shape_at{axis=i}(x)``) per dimension known only at run time. The static shape (``None`` for unknown
        dimensions) is ``self.type.shape``, which nbdiff's own checks read.
        """
        if None not in self.type.shape:
            return self.type.shape
        from nbdiff.ops.sizes import shape_tuple

        return shape_tuple(self)

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def provenance(self) -> Provenance:
        return self.owner.provenance if self.owner is not None else self._provenance

    @property
    def is_input(self) -> bool:
        """True for a root variable that a function takes as an argument (not a constant, not computed)."""
        return self.owner is None and not isinstance(self, Constant)

    def label(self) -> str:
        """A short human name: the variable's name, or its op's name."""
        if self.name:
            return self.name
        if self.owner is not None:
            return self.owner.op.name
        return "<unnamed>"

    def __repr__(self) -> str:
        return f"{self.label()}: {self.type}"

    def __reduce__(self) -> tuple:
        """Pickled as a root (type, name, origins; one object per pickle, by pickle's memo) or as the output of
        the nodes computing it, listed flat (no recursion, whatever the depth): unpickling rebuilds them through
        hash-consing (``rebuilt_output``)."""
        if self.owner is None:
            return (rebuilt_root, (self.type, self.name, tuple(self._provenance.origins)))
        records, (position,) = flat_records([self.owner])
        return (rebuilt_output, (records, position, self.index))

    # -- misuse ------------------------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        raise node_error(
            GraphError,
            self.label(),
            "a symbolic variable has no truth value; use nd.where(cond, a, b) instead of if/and/or",
            [self],
        )

    def __iter__(self):
        raise node_error(
            GraphError,
            self.label(),
            "a symbolic variable cannot be iterated; index it (x[i]) or use nd.sum/nd.stack",
            [self],
        )

    def __len__(self) -> int:
        if self.ndim and self.type.shape[0] is not None:
            return self.type.shape[0]
        raise node_error(GraphError, self.label(), "len() needs a known first dimension", [self])

    # -- arithmetic (NumPy semantics; implemented in nbdiff.ops) -------------------------------------------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().true_divide(self, other)

    def __rtruediv__(self, other):
        return _ops().true_divide(other, self)

    def __pow__(self, other):
        return _ops().power(self, other)

    def __rpow__(self, other):
        return _ops().power(other, self)

    def __neg__(self):
        return _ops().negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops().abs(self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __lt__(self, other):
        return _ops().less(self, other)

    def __le__(self, other):
        return _ops().less_equal(self, other)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    def __eq__(self, other):  # type: ignore[override]
        return _ops().equal(self, other)

    def __ne__(self, other):  # type: ignore[override]
        return _ops().not_equal(self, other)

    def __getitem__(self, index):
        return _ops().getitem(self, index)

    # -- NumPy-named methods -------------------------------------------------------------------------------------
    @property
    def T(self) -> Variable:
        return _ops().transpose(self)

    def astype(self, dtype: object) -> Variable:
        return _ops().astype(self, dtype)

    def sum(self, axis=None, keepdims: bool = False) -> Variable:
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> Variable:
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False) -> Variable:
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims: bool = False) -> Variable:
        return _ops().min(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims: bool = False) -> Variable:
        return _ops().prod(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape) -> Variable:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def transpose(self, *axes) -> Variable:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops().transpose(self, axes or None)

    def dot(self, other) -> Variable:
        return _ops().dot(self, other)


class Constant(Variable):
    """A constant array in a graph. Constants are hash-consed by value, so equal constants are one node."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray, name: str | None = None):
        super().__init__(TensorType(data.dtype.name, tuple(data.shape)), None, 0, name)
        data.setflags(write=False)
        self.data = data

    def label(self) -> str:
        if self.name:
            return self.name
        if self.data.size == 1:
            value = self.data.reshape(()).item()
            if not isinstance(value, float):
                return str(value)
            text = f"{value:.6g}"
            return text if any(c in text for c in ".ein") else text + ".0"
        return f"constant{self.type}"

    def __repr__(self) -> str:
        return f"Constant({self.label()}, {self.type})"

    def __reduce__(self) -> tuple:
        """Pickled by value: a small unnamed constant is hash-consed again on unpickling (``constant``)."""
        if self.name is None and self.data.size <= _SMALL_CONSTANT:
            return (constant, (np.array(self.data),))
        return (Constant, (np.array(self.data), self.name))


class Apply:
    """An application of an ``Op`` to input variables, producing output variables. Immutable and hash-consed."""

    __slots__ = ("op", "inputs", "outputs", "provenance", "__weakref__")

    def __init__(self, op: Op, inputs: tuple[Variable, ...], output_types: Sequence[TensorType], origins: list[Origin]):
        self.op = op
        self.inputs = inputs
        self.outputs = tuple(Variable(t, self, i) for i, t in enumerate(output_types))
        self.provenance = Provenance(origins)

    @property
    def out(self) -> Variable:
        """The single output of a one-output node."""
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Apply({self.op.name}, {[v.label() for v in self.inputs]})"

    def __reduce__(self) -> tuple:
        """Pickled as the flat list of the nodes it depends on (see ``Variable.__reduce__``)."""
        records, (position,) = flat_records([self])
        return (rebuilt_node, (records, position))


_NODE_CACHE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_CONSTANT_CACHE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()
_SMALL_CONSTANT = 4096  # constants up to this many elements are hash-consed by value


def apply(
    op: Op, inputs: Sequence[Variable], output_types: Sequence[TensorType], origins: Sequence[Origin] | None = None
) -> Apply:
    """Return the node for ``op(*inputs)``, reusing the existing one if this op was applied to these inputs before.

    The cache key uses the inputs' identities; the node holds its inputs, so an id cannot be reused while the
    node is alive. A reused node records the new construction site in its provenance. Nodes whose inputs are all
    constants are not shared (see below). ``origins`` (unpickling) stand for the construction site: a new node
    takes them, an existing one adds them.
    """
    inputs = tuple(inputs)
    inherited = tuple(origins) if origins is not None else inherited_origins()
    if all(isinstance(v, Constant) for v in inputs):
        # A node of constants only would be shared by every graph in the process, its provenance naming whichever
        # line built it first; each construction gets its own node instead (the fold pass turns them into constants).
        return Apply(op, inputs, output_types, list(inherited) if inherited is not None else [current_origin()])
    key = (op, tuple(id(v) for v in inputs))
    with _CACHE_LOCK:
        node = _NODE_CACHE.get(key)
        if node is not None:
            if origins is not None:
                for origin in origins:
                    node.provenance.add(origin)
            elif inherited is None:  # a rewrite that lands on an existing node leaves its history alone
                node.provenance.add(current_origin())
            return node
        origins = list(inherited) if inherited is not None else [current_origin()]
        node = Apply(op, inputs, output_types, origins)
        _NODE_CACHE[key] = node
    return node


# ---------------------------------------------------------------------------------------------------------------
# Pickling: nodes as flat records, rebuilt through hash-consing
# ---------------------------------------------------------------------------------------------------------------
NodeRecord = tuple  # (op, input references, output types, origins); a reference: a root variable or (node, output)


def flat_records(nodes: Sequence[Apply]) -> tuple[list[NodeRecord], list[int]]:
    """The nodes ``nodes`` depend on, inputs before users, as records referring to earlier records by position;
    and the positions of ``nodes``. Iterative, so a graph of any depth pickles; a node shared by several of
    ``nodes`` is one record (constant-only nodes, which hash-consing does not merge, stay shared)."""
    order: list[Apply] = []
    position: dict[int, int] = {}
    stack: list[tuple[Apply, bool]] = [(node, False) for node in reversed(nodes)]
    while stack:
        current, expanded = stack.pop()
        if id(current) in position:
            continue
        if expanded:
            position[id(current)] = len(order)
            order.append(current)
            continue
        stack.append((current, True))
        stack += [(v.owner, False) for v in reversed(current.inputs) if v.owner is not None]
    records = [
        (
            n.op,
            tuple(v if v.owner is None else (position[id(v.owner)], v.index) for v in n.inputs),
            tuple(v.type for v in n.outputs),
            tuple(n.provenance.origins),
        )
        for n in order
    ]
    return records, [position[id(node)] for node in nodes]


def rebuilt_nodes(records: Sequence[NodeRecord]) -> list[Apply]:
    """Every node of ``records`` (``flat_records``) built again through ``apply``: equal to a live node of this
    process when there is one (hash-consing), keeping the pickled origins."""
    nodes: list[Apply] = []
    for op, references, types, origins in records:
        inputs = [r if isinstance(r, Variable) else nodes[r[0]].outputs[r[1]] for r in references]
        nodes.append(apply(op, inputs, types, origins))
    return nodes


def rebuilt_node(records: Sequence[NodeRecord], position: int) -> Apply:
    """The node at ``position`` of ``records``, rebuilt (``rebuilt_nodes``)."""
    return rebuilt_nodes(records[: position + 1])[position]


def rebuilt_output(records: Sequence[NodeRecord], position: int, index: int) -> Variable:
    """Output ``index`` of the node at ``position`` (``rebuilt_node``)."""
    return rebuilt_node(records, position).outputs[index]


def packed_variables(variables: Sequence[Variable]) -> tuple[list[NodeRecord], list[Any]]:
    """``variables`` for pickling together, sharing their nodes: the records and a reference per variable (the
    variable itself for a root, ``(position, output)`` otherwise); ``unpacked_variables`` rebuilds them."""
    owned = [v.owner for v in variables if v.owner is not None]
    records, positions = flat_records(owned)
    at = iter(positions)
    return records, [v if v.owner is None else (next(at), v.index) for v in variables]


def unpacked_variables(records: Sequence[NodeRecord], references: Sequence[Any]) -> list[Variable]:
    """The variables ``packed_variables`` described, rebuilt."""
    nodes = rebuilt_nodes(records)
    return [r if isinstance(r, Variable) else nodes[r[0]].outputs[r[1]] for r in references]


def rebuilt_root(type: TensorType, name: str | None, origins: Sequence[Origin]) -> Variable:
    """A root variable (a function input) with its pickled origins."""
    variable = Variable(type, None, 0, name)
    variable._provenance = Provenance(list(origins))
    return variable


def constant(value: Any, dtype: object = None, name: str | None = None) -> Constant:
    """A constant variable holding ``value`` (an array, list or number), hash-consed by value when small."""
    if isinstance(value, Constant) and dtype is None:
        return value
    if isinstance(value, Variable):
        raise node_error(GraphError, "constant", "expected a concrete value, got a symbolic variable", [value])
    target = None if dtype is None else as_dtype(dtype)
    try:
        data = np.asarray(value, dtype=target)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, strings for a numeric dtype, overflow
        raise node_error(DTypeError, "constant", f"cannot convert {type(value).__name__} to an array ({exc})") from None
    if data.dtype.kind not in "biuf":
        raise node_error(DTypeError, "constant", f"cannot use a value of dtype {data.dtype} in a graph", [data])
    as_dtype(data.dtype)
    if data.size > _SMALL_CONSTANT or name is not None:
        return Constant(np.array(data), name)
    key = (data.dtype.name, data.shape, data.tobytes())
    with _CACHE_LOCK:
        node = _CONSTANT_CACHE.get(key)
        if node is None:
            node = Constant(np.array(data))
            _CONSTANT_CACHE[key] = node
    return node


def as_variable(value: Any, like: Variable | None = None) -> Variable:
    """Turn ``value`` into a graph variable; Python numbers are weakly typed (NEP 50) and take ``like``'s dtype."""
    if isinstance(value, Variable):
        return value
    if like is not None and isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        return constant(value, _weak_scalar_dtype(value, like.dtype))
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        return constant(value, "bool" if isinstance(value, bool) else "int64" if isinstance(value, int) else "float64")
    return constant(value)


def _weak_scalar_dtype(value: bool | int | float, other: str) -> str:
    """NumPy 2's rule for a Python scalar meeting an array of dtype ``other``."""
    if isinstance(value, bool):
        return other
    if isinstance(value, int):
        if other == "bool":
            return "int64"
        if not is_float(other):
            info = np.iinfo(other)
            if not info.min <= value <= info.max:
                raise node_error(DTypeError, "constant", f"Python integer {value} does not fit in {other}")
        return other
    return other if is_float(other) else "float64"


_REGISTRY: dict[str, type[Op]] = {}


class Op:
    """The op contract: everything an op means lives in its class.

    - ``infer(*inputs)`` (type and shape inference; raises a typed error naming the op on bad input),
    - ``perform(*arrays)`` (NumPy, the reference semantics every backend must match),
    - ``pullback(node, output_grads)`` (vector-Jacobian product built from graph ops),
    - ``pushforward(node, input_tangents)`` (optional Jacobian-vector product; ``Rop`` derives it otherwise),
    - ``batch(node, inputs, batched, size)`` (optional batching rule for ``vmap``; unrolled over a static batch
      otherwise; shared rules live in ``nbdiff.ops.batching``).

    Ops are frozen dataclasses (or parameterless classes): equal parameters mean the same op, which is what
    hash-consing needs. Concrete subclasses register themselves; a registry test checks the contract.
    """

    abstract: ClassVar[bool] = True
    nout: ClassVar[int] = 1
    nonnegative: ClassVar[bool] = False  # every output is >= 0 (or NaN) for every input: rewrites may rely on it
    _snake_name: ClassVar[str] = "op"

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls._snake_name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls.__name__).lower()
        if not cls.__dict__.get("abstract", False):
            cls.abstract = False
            _REGISTRY[cls.__name__] = cls

    # -- identity ------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The snake-case name used in printers and errors (``LessEqual`` -> ``less_equal``, ``Log1p`` -> ``log1p``)."""
        return type(self)._snake_name

    def params(self) -> dict[str, Any]:
        """The op's parameters, shown by printers (``{axis: (0,)}``); empty for parameterless ops."""
        fields = getattr(self, "__dataclass_fields__", {})
        return {name: getattr(self, name) for name in fields}

    def describe(self) -> str:
        params = self.params()
        if not params:
            return self.name
        inner = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{self.name}{{{inner}}}"

    def identity_key(self) -> tuple:
        """``(class, hashable parameters)``: equal keys mean the same op. Computed once (ops are immutable)."""
        try:
            return self.__dict__["_identity_key"]
        except KeyError:
            key = (type(self), tuple(_hashable(v) for v in self.params().values()))
            self.__dict__["_identity_key"] = key
            return key

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Op) and self.identity_key() == other.identity_key())

    def __hash__(self) -> int:
        return hash(self.identity_key())

    # -- the contract --------------------------------------------------------------------------------------------
    def infer(self, *inputs: Variable) -> list[TensorType]:
        """Output types of this op on these inputs; raise a typed error (``node_error``) on bad input."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer")

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Compute the outputs with NumPy. Returns a tuple with one array per output."""
        raise NotImplementedError(f"{type(self).__name__} does not implement perform")

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[GradResult]:
        """Gradients with respect to each input, as graph variables (``None`` for disconnected inputs)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement pullback")

    pushforward: Any = None  # optional: (node, input_tangents) -> list[Variable | None]
    batch: Any = None  # optional: (node, inputs, batched, size) -> outputs with a leading batch axis (nbdiff.vmap)

    # -- construction --------------------------------------------------------------------------------------------
    def prepare_inputs(self, inputs: Sequence[Any]) -> list[Variable]:
        """Convert raw arguments to variables; Python numbers take the dtype of the first variable input."""
        like = next((v for v in inputs if isinstance(v, Variable)), None)
        return [as_variable(v, like) for v in inputs]

    def make_node(self, *inputs: Any) -> Apply:
        try:
            variables = self.prepare_inputs(inputs)
        except DTypeError as exc:  # a raw argument that is no number or array: name this op, not ``constant``
            message = str(exc).splitlines()[0]
            if not message.startswith("constant: "):
                raise
            raise self.error(DTypeError, message.removeprefix("constant: "), inputs) from None
        types = self.infer(*variables)
        for type_ in types:
            if type_.ndim > max_ndim():  # expand_dims, stack, None indices: refused here, not in NumPy at run time
                raise self.error(ShapeError, f"the result would have {ndim_limit_detail(type_.ndim)}", variables)
        return apply(self, variables, types)

    def __call__(self, *inputs: Any) -> Any:
        node = self.make_node(*inputs)
        return node.outputs[0] if self.nout == 1 else node.outputs

    def error(self, cls: type, detail: str, inputs: Sequence[object] = ()) -> Exception:
        """A typed error naming this op, the inputs' types and the user's current line."""
        return node_error(cls, self.name, detail, inputs)

    def __repr__(self) -> str:
        return self.describe()


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.name, value.shape, value.tobytes())
    return value


def is_nonnegative(var: Variable) -> bool:
    """Whether ``var`` is provably >= 0 (or NaN) everywhere: a bool or unsigned value, a constant with no negative
    entry, or an output of an op class that declares ``nonnegative`` (exp, abs, sqrt, square, softmax, ...)."""
    if var.dtype == "bool" or var.dtype.startswith("uint"):
        return True
    if isinstance(var, Constant):
        return bool(np.all(~(var.data < 0)))
    return var.owner is not None and type(var.owner.op).nonnegative


def registered_ops() -> dict[str, type[Op]]:
    """Every concrete op class, by class name (the registry the contract test checks)."""
    return dict(_REGISTRY)


def _ops():
    import nbdiff.ops as ops

    return ops
