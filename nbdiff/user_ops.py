"""User-defined ops: a scalar function as a fusing elementwise op, an opaque NumPy function or a subgraph with its
own gradient, and a foreign C function reached through ctypes or CFFI.

- ``@nd.elemwise``: a scalar Python function using ``math`` becomes an :class:`UserElemwise`. The interpreter runs
  its vectorisation (``np.vectorize``, or the ``numpy=`` function given); fused kernels call it compiled: its source
  text (decorators removed, renamed ``_nbdiff_<name>_<hash>``) is emitted into the kernel module under
  ``numba.njit``, with the numbers and modules it reads as globals bound beside it (``module_code``). The op's
  identity (hash-consing, and the structural hash naming kernel modules on disk) includes a hash of that text and
  of its derivatives' source, so editing the function recompiles. Partial derivatives are callables of the input
  variables (optionally also of the output) returning graph variables, built from nbdiff ops or further
  ``@nd.elemwise`` ops; a plain scalar function given as a derivative becomes an elementwise op itself.
- ``nd.custom_op``: an opaque op running a NumPy function, with declared output types and a user-given pullback
  (and optional pushforward) written with nbdiff ops; ``nd.op_from_graph`` wraps a subgraph as one op whose
  gradient is the subgraph's own unless a pullback is given.
- ``nd.foreign``: a ctypes or CFFI function pointer of a declared scalar signature. The interpreter calls it through
  NumPy (``np.vectorize``); kernel modules bind it by library path and symbol name (``llvmlite``'s
  ``load_library_permanently`` and a ``numba.types.ExternalFunction``), which Numba can cache on disk, unlike a
  ctypes pointer.

Every mistake found when an op is defined raises ``OpDefinitionError`` naming the op, the user's line and where the
function was defined.
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import dis
import hashlib
import inspect
import itertools
import math
import textwrap
import types as pytypes
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.errors import GradientError, OpCheckError, OpDefinitionError, ShapeError, node_error
from nbdiff.graph.basic import Apply, Constant, Op, Variable, as_variable
from nbdiff.graph.traversal import graph_inputs, toposort
from nbdiff.graph.types import SUPPORTED_DTYPES, TensorType, as_dtype, is_float
from nbdiff.ops.elemwise import Elemwise

_TOKENS = itertools.count()  # distinguishes opaque ops: each definition is a new op


# ---------------------------------------------------------------------------------------------------------------
# Helpers: where a function was defined, and the errors naming it
# ---------------------------------------------------------------------------------------------------------------
def defined_at(fn: Any) -> str:
    """``file:line`` of a Python function's ``def`` (or its repr for other callables)."""
    code = getattr(inspect.unwrap(fn) if callable(fn) else fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{code.co_filename}:{code.co_firstlineno}"


def _definition_error(op_name: str, detail: str, fn: Any = None, cls: type = OpDefinitionError) -> Exception:
    """A typed error naming the op, what is wrong, where ``fn`` was defined and the user's current line."""
    where = f" ({getattr(fn, '__name__', 'it')} defined at {defined_at(fn)})" if fn is not None else ""
    return node_error(cls, op_name, detail + where)


def _positional_arity(fn: Callable, op_name: str) -> int | None:
    """The number of positional parameters ``fn`` takes (None: any, with ``*args``)."""
    if isinstance(fn, np.ufunc):
        return fn.nin
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is inspect.Parameter.empty:
            raise _definition_error(op_name, f"keyword-only parameter {parameter.name!r} has no default", fn)
    return count


def _callable_key(fn: Any) -> str:
    """A stable text standing for a callable's behaviour: its source (or bytecode) and the values it closes over."""
    if isinstance(fn, UserElemwise):
        return fn.key
    if isinstance(fn, Op):
        return repr(fn.identity_key())
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = repr((code.co_code, code.co_consts))
    cells = tuple(repr(cell.cell_contents) for cell in (fn.__closure__ or ()))
    return text + repr(cells) + repr(fn.__defaults__)


def _digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _result_float_dtype(dtypes: Sequence[str]) -> str:
    """The float dtype of a math function of these inputs: their common float dtype, float64 for integers."""
    dtype = np.result_type(*dtypes).name if dtypes else "float64"
    return dtype if is_float(dtype) else "float64"


def _numpy_semantics(fn: Callable) -> Callable:
    """``fn`` returning what compiled code (IEEE arithmetic, Numba's ``error_model="numpy"``) returns where Python's
    ``math`` raises: NaN for a domain error or a division by zero, infinity for an overflow."""

    def scalar(*args):
        try:
            return fn(*args)
        except (ValueError, ZeroDivisionError):
            return math.nan
        except OverflowError:
            return math.inf

    return scalar


# ---------------------------------------------------------------------------------------------------------------
# A scalar function's source as module text for a kernel
# ---------------------------------------------------------------------------------------------------------------
_MODULES = {"math": "math", "cmath": "cmath", "numpy": "numpy"}


def _global_names(code: pytypes.CodeType) -> list[str]:
    """The global names ``code`` (and the code nested in it) reads, in first-use order."""
    names: list[str] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME") and instruction.argval not in names:
            names.append(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, pytypes.CodeType):
            names += [n for n in _global_names(const) if n not in names]
    return names


def _binding(op_name: str, fn: Callable, name: str, value: Any, alias: str) -> list[str]:
    """Module lines binding ``alias`` to the value the function reads as ``name`` (a module, a number, an op)."""
    if isinstance(value, pytypes.ModuleType) and value.__name__ in _MODULES:
        return [f"import {value.__name__} as {alias}"]
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        scalar = value.item() if isinstance(value, np.generic) else value
        if isinstance(scalar, float) and not math.isfinite(scalar):
            return [f"{alias} = float({str(scalar)!r})"]
        return [f"{alias} = {scalar!r}"]
    if isinstance(value, UserElemwise):
        return [*value.module_code(), f"{alias} = {value.symbol}"]
    raise _definition_error(
        op_name,
        f"the function reads {name!r} ({type(value).__name__}), which a compiled kernel cannot reach: use numbers, "
        "math, numpy or other @nd.elemwise functions",
        fn,
    )


class _RenameGlobals(ast.NodeTransformer):
    """Renames the function's global names to their per-op aliases (two ops' globals never clash in a module)."""

    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.aliases:
            return ast.copy_location(ast.Name(self.aliases[node.id], ast.Load()), node)
        return node


def njit_module_code(fn: Callable, op_name: str, symbol: str) -> list[str]:
    """The module lines defining ``symbol``: ``fn``'s source under ``numba.njit`` with its globals bound."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        raise _definition_error(op_name, "the function's source text cannot be read (define it with def)", fn) from None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        raise _definition_error(op_name, "the function's source text cannot be parsed alone (use def)", fn) from None
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, ast.FunctionDef) or definition.name != fn.__name__:
        raise _definition_error(op_name, "a scalar function must be defined with def (not a lambda)", fn)
    code = fn.__code__
    aliases: dict[str, str] = {}
    lines: list[str] = []
    for name in _global_names(code):
        if name in fn.__globals__:
            value = fn.__globals__[name]
        elif hasattr(builtins, name):
            continue  # abs, min, max, float, int, range: Numba knows them
        else:
            raise _definition_error(op_name, f"the function reads {name!r}, which is not defined", fn)
        aliases[name] = f"{symbol}__{name}"
        lines += _binding(op_name, fn, name, value, aliases[name])
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        aliases[name] = f"{symbol}__{name}"
        lines += _binding(op_name, fn, name, cell.cell_contents, aliases[name])
    definition.decorator_list = []
    definition.name = symbol
    definition.returns = None
    for argument in definition.args.args + definition.args.posonlyargs:
        argument.annotation = None
    definition = _RenameGlobals(aliases).visit(definition)
    return [*lines, '@numba.njit(cache=True, error_model="numpy")', ast.unparse(definition)]


# ---------------------------------------------------------------------------------------------------------------
# Elementwise ops from scalar functions
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class UserElemwise(Elemwise):
    """An elementwise op from a user's scalar function (``@nd.elemwise``); see the module docstring.

    Its identity is its name, arity and ``key`` (a hash of the kernel text and the derivatives' source)."""

    abstract = True  # user-defined: instances are made by nd.elemwise, not registered in the op table
    label: str
    arity: int
    key: str
    fn: Callable = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    numpy_impl: Callable | None = field(default=None, compare=False, repr=False)
    derivatives: tuple = field(default=(), compare=False, repr=False)
    lines: tuple[str, ...] = field(default=(), compare=False, repr=False)

    # -- identity ------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.label

    @property
    def nin(self) -> int:  # type: ignore[override]
        return self.arity

    def params(self) -> dict[str, Any]:
        """The identity: the function's name, arity and source hash (the callables themselves are left out)."""
        return {"fn": self.label, "arity": self.arity, "source": self.key}

    def describe(self) -> str:
        """``softplus{source=1a2b...}``: the hash is part of kernel modules' structure, so an edit recompiles."""
        return f"{self.label}{{source={self.key}}}"

    @property
    def symbol(self) -> str:
        """The name of the compiled function in kernel modules."""
        return f"_nbdiff_{self.label}_{self.key}"

    # -- code ----------------------------------------------------------------------------------------------------
    def module_code(self) -> tuple[str, ...]:
        """The module lines a kernel calling this op needs (``codegen.module_definitions`` emits them)."""
        return self.lines

    @property
    def scalar_code(self) -> str:  # type: ignore[override]
        return f"{self.symbol}(" + ", ".join(f"{{{i}}}" for i in range(self.arity)) + ")"

    # -- types and values ----------------------------------------------------------------------------------------
    def __call__(self, *inputs: Any) -> Any:
        """On graph variables (or arrays): a node. On Python or NumPy scalars only: the scalar function's value, so
        one user function can call another in its Python body as in its compiled one."""
        if inputs and all(isinstance(v, (int, float, np.integer, np.floating)) for v in inputs):
            return self.scalar(*inputs)
        return super().__call__(*inputs)

    def scalar(self, *args: Any) -> Any:
        """The scalar function itself on numbers."""
        return self.fn(*args)

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickled by reference where the op is its module's attribute (``@nd.elemwise`` at module level: the
        function's own name then names the op, not the function); otherwise field by field."""
        module, qualname = getattr(self.fn, "__module__", None), getattr(self.fn, "__qualname__", "")
        if _module_attribute(module, qualname) is self:
            return (_module_attribute, (module, qualname))
        return object.__reduce_ex__(self, protocol)

    def result_dtype(self, inputs: Sequence[Variable]) -> str:
        return _result_float_dtype([v.dtype for v in inputs])

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        dtype = _result_float_dtype([a.dtype.name for a in map(np.asarray, arrays)])
        arrays = tuple(np.asarray(a, dtype=dtype) for a in arrays)
        if self.numpy_impl is not None:
            return (np.asarray(self.numpy_impl(*arrays), dtype=dtype),)
        vectorized = np.vectorize(_numpy_semantics(self.fn), otypes=[dtype])
        return (np.asarray(vectorized(*arrays), dtype=dtype),)

    # -- derivatives ---------------------------------------------------------------------------------------------
    def partials(self, node: Apply, wanted: Sequence[bool]) -> list[Variable | None]:
        result: list[Variable | None] = []
        for position, want in enumerate(wanted):
            if not want:
                result.append(None)
                continue
            derivative = self.derivatives[position] if position < len(self.derivatives) else None
            if derivative is None:
                raise node_error(
                    GradientError,
                    self.name,
                    f"no derivative with respect to input {position} was given (derivatives=[...] of nd.elemwise)",
                    node.inputs,
                    node.provenance,
                )
            result.append(_call_derivative(self.name, derivative, list(node.inputs), node.outputs[0]))
        return result

    def pullback(self, node, output_grads):
        if not self.derivatives and any(is_float(v.dtype) and not isinstance(v, Constant) for v in node.inputs):
            if output_grads[0] is not None:
                raise node_error(
                    GradientError, self.name, "defined without derivatives=: it cannot be differentiated", node.inputs
                )
        return super().pullback(node, output_grads)

    # -- checks --------------------------------------------------------------------------------------------------
    def check(self, *args: Any, rtol: float = 1e-7, atol: float = 1e-12, eps: float = 1e-6) -> None:
        """Compare, at ``args``, the scalar function (element by element) with the op's NumPy implementation, and
        each given derivative with central differences of the scalar function; ``OpCheckError`` on a mismatch."""
        arrays = np.broadcast_arrays(*(np.asarray(a, dtype="float64") for a in args))
        if len(arrays) != self.arity:
            raise _definition_error(self.name, f"check needs {self.arity} argument(s), got {len(arrays)}")
        scalar = _numpy_semantics(self.scalar)
        expected = np.array([scalar(*map(float, xs)) for xs in zip(*(a.ravel() for a in arrays))], dtype="float64")
        (actual,) = self.perform(*arrays)
        _compare(
            self.name, "the NumPy implementation against the scalar function", actual.ravel(), expected, rtol, atol
        )
        if not self.derivatives:
            return
        from nbdiff.function import function
        from nbdiff.variables import tensor

        variables = [tensor(f"x{i}", a.ndim, "float64") for i, a in enumerate(arrays)]
        out = self(*variables)
        for position, derivative in enumerate(self.derivatives):
            if derivative is None:
                continue
            partial = _call_derivative(self.name, derivative, variables, out)
            value = np.broadcast_to(function(variables, partial, backend="numpy")(*arrays), arrays[0].shape)
            up = [a + eps if i == position else a for i, a in enumerate(arrays)]
            down = [a - eps if i == position else a for i, a in enumerate(arrays)]
            numeric = (self.perform(*up)[0] - self.perform(*down)[0]) / (2 * eps)
            _compare(self.name, f"derivative {position} against central differences", value, numeric, 1e-5, 1e-6)


def _compare(name: str, what: str, actual, expected, rtol: float, atol: float) -> None:
    """Raise ``OpCheckError`` naming the worst element where ``actual`` and ``expected`` differ."""
    actual, expected = np.asarray(actual, dtype="float64"), np.asarray(expected, dtype="float64")
    bad = ~np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    if np.any(bad):
        index = int(np.flatnonzero(bad.ravel())[0])
        raise OpCheckError(
            f"{name}: {what} disagree at element {index}: {actual.ravel()[index]!r} != {expected.ravel()[index]!r} "
            f"(rtol={rtol}, atol={atol})"
        )


def _call_derivative(op_name: str, derivative: Callable, inputs: list[Variable], out: Variable) -> Variable:
    """A partial derivative as a graph variable: ``derivative(*inputs)`` or ``derivative(*inputs, out)``, checked
    to be an elementwise float value (``OpDefinitionError`` naming the op and the derivative's line otherwise)."""
    arity = _positional_arity(derivative, op_name)
    args = [*inputs, out] if arity == len(inputs) + 1 else inputs
    value = derivative(*args)
    try:
        value = as_variable(value, out)
    except Exception:
        raise _definition_error(
            op_name, f"a derivative returned {type(value).__name__}, not a graph variable or number", derivative
        ) from None
    if not is_float(value.dtype):
        raise _definition_error(op_name, f"a derivative returned dtype {value.dtype}, not a float dtype", derivative)
    elementwise = value.ndim <= out.ndim and (
        value.ndim == out.ndim or (isinstance(value, Constant) and value.data.size == 1)
    )
    if not elementwise:
        raise _definition_error(
            op_name,
            f"a derivative returned {value.type} for inputs of {out.ndim} dimension(s): a partial derivative of an "
            f"elementwise op must be elementwise (the output's shape, or a scalar constant)",
            derivative,
        )
    if value.dtype != out.dtype:
        value = value.astype(out.dtype)
    return value


def _refusal(derivative: Callable, arity: int) -> TypeError | None:
    """The ``TypeError`` a derivative raises on graph variables (a scalar function using ``math`` does), or None
    when it builds a graph (an nbdiff expression)."""
    from nbdiff.variables import tensor

    try:
        derivative(*(tensor(None, 0, "float64") for _ in range(arity)))
    except TypeError as exc:
        return exc
    except Exception:
        return None
    return None


def _prepare_derivatives(op_name: str, fn: Callable, arity: int, derivatives: Any) -> tuple:
    """The derivatives as callables of graph variables, one per input (scalar functions become elementwise ops)."""
    if derivatives is None:
        return ()
    if callable(derivatives):
        derivatives = [derivatives]
    derivatives = list(derivatives)
    if len(derivatives) != arity:
        raise _definition_error(
            op_name, f"derivatives has {len(derivatives)} entries for a function of {arity} argument(s)", fn
        )
    prepared = []
    for position, derivative in enumerate(derivatives):
        if derivative is None or isinstance(derivative, Op):
            prepared.append(derivative)
            continue
        if not callable(derivative):
            raise _definition_error(op_name, f"derivative {position} is {type(derivative).__name__}, not callable", fn)
        d_arity = _positional_arity(derivative, op_name)
        if d_arity is not None and d_arity not in (arity, arity + 1):
            raise _definition_error(
                op_name,
                f"derivative {position} takes {d_arity} argument(s); it must take the op's {arity} input(s) "
                f"(and optionally its output)",
                derivative,
            )
        refusal = _refusal(derivative, d_arity or arity) if isinstance(derivative, pytypes.FunctionType) else None
        if refusal is not None:  # a scalar function: made an elementwise op of its own
            try:
                derivative = elemwise(derivative, name=f"d{op_name}_{position}")
            except OpDefinitionError as exc:
                detail = str(exc).splitlines()[0]
                raise _definition_error(
                    op_name,
                    f"derivative {position} refuses graph variables ({refusal}) and is no scalar function a kernel "
                    f"can compile either ({detail})",
                    derivative,
                ) from None
        prepared.append(derivative)
    return tuple(prepared)


def _validate_derivatives(op: UserElemwise) -> None:
    """Build each derivative on placeholder scalars and vectors, so that a wrong shape or dtype fails at definition.
    A derivative reading a name not yet defined (the op itself, assigned after this call) is checked when used."""
    from nbdiff.variables import tensor

    for ndim in (0, 1):
        inputs = [tensor(None, ndim, "float64") for _ in range(op.arity)]
        out = op(*inputs)
        for derivative in op.derivatives:
            if derivative is None:
                continue
            try:
                _call_derivative(op.name, derivative, inputs, out)
            except NameError:
                continue
            except OpDefinitionError:
                raise
            except Exception as exc:
                raise _definition_error(
                    op.name, f"a derivative failed on placeholder inputs: {type(exc).__name__}: {exc}", derivative
                ) from None


def _module_attribute(module: str | None, qualname: str) -> Any:
    """``module.qualname`` (imported), or None where it cannot be found (a local function)."""
    import importlib
    import sys

    if not isinstance(module, str) or not isinstance(qualname, str) or not qualname or "<locals>" in qualname:
        return None
    try:
        found: Any = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def elemwise(
    fn: Callable | None = None,
    *,
    derivatives: Any = None,
    numpy: Callable | None = None,
    name: str | None = None,
) -> Any:
    """Make a scalar Python function (using ``math``) an elementwise op that fuses into compiled kernels.

    ``@nd.elemwise`` or ``@nd.elemwise(derivatives=[...])``. ``derivatives`` holds one entry per argument: a
    callable of the input variables (optionally followed by the output variable) returning the partial derivative
    as a graph variable (nbdiff ops or other elementwise ops, so it differentiates again), a plain scalar function
    (made an elementwise op itself), or None (not differentiable in that argument). ``numpy`` is an optional
    vectorised implementation for the interpreter (default: ``np.vectorize`` of ``fn``); ``op.check(*arrays)``
    compares it with the scalar function and the derivatives with finite differences.
    """
    if fn is None:
        return lambda f: elemwise(f, derivatives=derivatives, numpy=numpy, name=name)
    op_name = name or getattr(fn, "__name__", "elemwise")
    if not isinstance(fn, pytypes.FunctionType):
        raise _definition_error(op_name, f"expected a Python function, got {type(fn).__name__}")
    if not op_name.isidentifier():
        raise _definition_error(op_name, "the op's name must be a Python identifier", fn)
    arity = _positional_arity(fn, op_name)
    if arity is None or arity == 0:
        raise _definition_error(op_name, "a scalar function must take a fixed number (at least one) of arguments", fn)
    if numpy is not None and not callable(numpy):
        raise _definition_error(op_name, f"numpy= must be callable, got {type(numpy).__name__}", fn)
    prepared = _prepare_derivatives(op_name, fn, arity, derivatives)
    placeholder = "_nbdiff_SYMBOL"
    lines = njit_module_code(fn, op_name, placeholder)
    key = _digest("\n".join(lines) + "".join(_callable_key(d) for d in prepared) + _callable_key(numpy))
    symbol = f"_nbdiff_{op_name}_{key}"
    lines = [line.replace(placeholder, symbol) for line in lines]
    op = UserElemwise(op_name, arity, key, fn, numpy, prepared, tuple(lines))
    _validate_derivatives(op)
    return op


# ---------------------------------------------------------------------------------------------------------------
# Foreign functions (ctypes, CFFI)
# ---------------------------------------------------------------------------------------------------------------
_CTYPES_DTYPES = {
    ctypes.c_double: "float64",
    ctypes.c_float: "float32",
    ctypes.c_int32: "int32",
    ctypes.c_int64: "int64",
}
_CFFI_DTYPES = {"double": "float64", "float": "float32", "int32_t": "int32", "int64_t": "int64", "int": "int32"}
_NUMBA_TYPES = {"float64": "float64", "float32": "float32", "int32": "int32", "int64": "int64"}


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _library_of(address: int) -> tuple[str | None, str | None]:
    """The shared library's path and the symbol's name at ``address`` (``dladdr``), or Nones where unknown."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None, None
    dladdr.argtypes = (ctypes.c_void_p, ctypes.POINTER(_DlInfo))
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    if not dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None, None
    path = info.dli_fname.decode() if info.dli_fname else None
    symbol = info.dli_sname.decode() if info.dli_sname else None
    return path, symbol


def _parse_signature(op_name: str, signature: str) -> tuple[str, tuple[str, ...]]:
    """``"float64(float64, float64)"`` as (result dtype, argument dtypes)."""
    text = signature.replace(" ", "")
    if not text.endswith(")") or "(" not in text:
        raise _definition_error(op_name, f"signature {signature!r} is not of the form 'float64(float64, ...)'")
    result, args = text[:-1].split("(", 1)
    return result, tuple(a for a in args.split(",") if a)


def _foreign_signature(op_name: str, fn: Any, signature: str | None) -> tuple[str, tuple[str, ...], int, str | None]:
    """(result dtype, argument dtypes, address, symbol) of a ctypes or CFFI function pointer."""
    if isinstance(fn, ctypes._CFuncPtr):  # type: ignore[attr-defined]
        address = ctypes.cast(fn, ctypes.c_void_p).value or 0
        symbol = getattr(fn, "__name__", None)
        if signature is None:
            if fn.argtypes is None:
                raise _definition_error(
                    op_name, "the ctypes function has no argtypes: set argtypes and restype, or pass signature="
                )
            names = [_CTYPES_DTYPES.get(t) for t in fn.argtypes]
            result = _CTYPES_DTYPES.get(fn.restype)
            if result is None or None in names:
                shown = ", ".join(getattr(t, "__name__", repr(t)) for t in fn.argtypes)
                raise _definition_error(
                    op_name,
                    f"unsupported signature {getattr(fn.restype, '__name__', fn.restype)}({shown}): arguments and "
                    f"result must be c_double, c_float, c_int32 or c_int64",
                )
            return result, tuple(names), address, symbol  # type: ignore[arg-type]
    elif type(fn).__module__ == "_cffi_backend":
        import _cffi_backend

        ctype = _cffi_backend.typeof(fn)
        if getattr(ctype, "kind", None) != "function":
            raise _definition_error(op_name, f"the CFFI object {ctype.cname} is not a function pointer")
        address = int(_cffi_backend.cast(_cffi_backend.new_primitive_type("uintptr_t"), fn))
        symbol = None
        if signature is None:
            names = [_CFFI_DTYPES.get(t.cname) for t in ctype.args]
            result = _CFFI_DTYPES.get(ctype.result.cname)
            if result is None or None in names or ctype.ellipsis:
                raise _definition_error(
                    op_name,
                    f"unsupported signature {ctype.cname}: arguments and result must be double, float, "
                    "int32_t or int64_t",
                )
            return result, tuple(names), address, symbol  # type: ignore[arg-type]
    else:
        raise _definition_error(op_name, f"expected a ctypes or CFFI function pointer, got {type(fn).__name__}")
    result, args = _parse_signature(op_name, signature)
    for dtype in (result, *args):
        if dtype not in _NUMBA_TYPES:
            raise _definition_error(
                op_name, f"unsupported type {dtype!r} in signature {signature!r}: use float64, float32, int32, int64"
            )
    return result, args, address, symbol


_DTYPE_CTYPES = {dtype: ctype for ctype, dtype in _CTYPES_DTYPES.items()}


def _c_caller(fn: Any, arg_dtypes: Sequence[str]) -> Callable:
    """``fn`` called with Python numbers of its declared argument types (ctypes refuses NumPy's float32)."""
    converts = [float if is_float(dtype) else int for dtype in arg_dtypes]

    def call(*args):
        return fn(*(convert(a) for convert, a in zip(converts, args)))

    return call


@dataclass(frozen=True, eq=False)
class ForeignFunction(UserElemwise):
    """A C function of scalars (ctypes or CFFI) as an elementwise op; see the module docstring."""

    abstract = True
    result: str = "float64"
    arg_dtypes: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "result": self.result, "args": self.arg_dtypes}

    @property
    def symbol(self) -> str:
        return f"_nbdiff_c_{self.label}_{self.key}"

    @property
    def scalar_code(self) -> str:  # type: ignore[override]
        args = ", ".join(f"np.{dtype}({{{i}}})" for i, dtype in enumerate(self.arg_dtypes))
        return f"{self.symbol}({args})"

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return is_float(self.result)

    def result_dtype(self, inputs: Sequence[Variable]) -> str:
        return self.result

    def scalar(self, *args: Any) -> Any:
        """The C function on numbers of its declared types."""
        return _c_caller(self.fn, self.arg_dtypes)(*args)

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        arrays = tuple(np.asarray(a, dtype=d) for a, d in zip(arrays, self.arg_dtypes))
        vectorized = np.vectorize(_c_caller(self.fn, self.arg_dtypes), otypes=[self.result])
        return (np.asarray(vectorized(*arrays), dtype=self.result),)


def foreign(
    fn: Any,
    *,
    signature: str | None = None,
    derivatives: Any = None,
    library: str | None = None,
    symbol: str | None = None,
    name: str | None = None,
) -> ForeignFunction:
    """A ctypes or CFFI function pointer of scalars as an elementwise op, callable inside compiled kernels.

    The signature comes from the ctypes function's ``argtypes``/``restype`` (the CFFI type), or ``signature=``
    ("float64(float64, float64)"; float64, float32, int32, int64). The library and symbol are found from the
    pointer (``dladdr``) unless given: kernel modules re-open them by path and name. ``derivatives`` as for
    ``nd.elemwise`` (callables of the input variables, optionally followed by the output).
    """
    op_name = name or symbol or getattr(fn, "__name__", None) or "foreign"
    result, arg_dtypes, address, found_symbol = _foreign_signature(op_name, fn, signature)
    path, dl_symbol = _library_of(address) if address else (None, None)
    library = library or path
    symbol = symbol or found_symbol or dl_symbol
    if not library or not symbol:
        raise _definition_error(op_name, "the function's library or symbol cannot be found: pass library= and symbol=")
    if not op_name.isidentifier():
        op_name = "".join(c if c.isalnum() else "_" for c in op_name)
    if not arg_dtypes:
        raise _definition_error(op_name, "a foreign function must take at least one argument")
    # the interpreter calls the address through a ctypes prototype of the declared signature (whatever fn's own)
    prototype = ctypes.CFUNCTYPE(_DTYPE_CTYPES[result], *(_DTYPE_CTYPES[d] for d in arg_dtypes))
    caller = prototype(address)
    prepared = _prepare_derivatives(op_name, fn, len(arg_dtypes), derivatives)
    numba_signature = f"_nbdiff_types.{_NUMBA_TYPES[result]}(" + ", ".join(
        f"_nbdiff_types.{_NUMBA_TYPES[d]}" for d in arg_dtypes
    )
    lines = [
        "import llvmlite.binding as _nbdiff_llvm",
        "from numba import types as _nbdiff_types",
        f"_nbdiff_llvm.load_library_permanently({library!r})",
        f"_nbdiff_SYMBOL = _nbdiff_types.ExternalFunction({symbol!r}, {numba_signature}))",
    ]
    key = _digest("\n".join(lines) + "".join(_callable_key(d) for d in prepared))
    op = ForeignFunction(op_name, len(arg_dtypes), key, caller, None, prepared, (), result, tuple(arg_dtypes))
    object.__setattr__(op, "lines", tuple(line.replace("_nbdiff_SYMBOL", op.symbol) for line in lines))
    _validate_derivatives(op)
    return op


# ---------------------------------------------------------------------------------------------------------------
# Opaque ops: a NumPy function with its own pullback, and a subgraph as one op
# ---------------------------------------------------------------------------------------------------------------
def _as_type(op_name: str, spec: Any) -> TensorType:
    """A declared output type: a ``TensorType``, ``(dtype, shape)`` or a variable whose type to copy."""
    if isinstance(spec, TensorType):
        return spec
    if isinstance(spec, Variable):
        return spec.type
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], (tuple, list)):
        dtype, shape = spec
        if not all(d is None or (isinstance(d, (int, np.integer)) and d >= 0) for d in shape):
            raise _definition_error(op_name, f"a declared shape must hold sizes or None, got {tuple(shape)}")
        return TensorType(as_dtype(dtype), tuple(None if d is None else int(d) for d in shape))
    raise _definition_error(op_name, f"an output type must be (dtype, shape), got {spec!r}")


def _user_list(value: Any, count: int) -> list:
    """A user callable's answer as a list of ``count`` entries (one entry may be given bare)."""
    if count == 1 and not isinstance(value, (list, tuple)):
        return [value]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_input_grads(op_name: str, fn: Callable, node: Apply, grads: Any, what: str) -> list[Variable | None]:
    """A user pullback's result: one entry per input, each None or of the input's rank (cast to its dtype)."""
    grads = _user_list(grads, len(node.inputs))
    if len(grads) != len(node.inputs):
        raise _definition_error(
            op_name, f"the {what} returned {len(grads)} value(s) for {len(node.inputs)} input(s)", fn
        )
    checked: list[Variable | None] = []
    for position, (var, grad) in enumerate(zip(node.inputs, grads)):
        if grad is None or not is_float(var.dtype):
            checked.append(None)
            continue
        checked.append(_checked_value(op_name, fn, grad, var, f"the {what}'s value {position}"))
    return checked


def _checked_value(op_name: str, fn: Callable, value: Any, like: Variable, what: str) -> Variable:
    """``value`` as a variable of ``like``'s rank and float dtype; ``OpDefinitionError`` naming ``fn`` otherwise."""
    try:
        value = as_variable(value, like)
    except Exception:
        raise _definition_error(op_name, f"{what} is {type(value).__name__}, not a graph variable", fn) from None
    if not is_float(value.dtype):
        raise _definition_error(op_name, f"{what} has dtype {value.dtype}; expected {like.dtype}", fn)
    mismatch = value.ndim != like.ndim or any(
        a is not None and b is not None and a != b for a, b in zip(value.type.shape, like.type.shape)
    )
    if mismatch and not (isinstance(value, Constant) and value.data.size == 1):
        raise _definition_error(op_name, f"{what} has type {value.type}; expected {like.type}", fn)
    if value.ndim != like.ndim:
        from nbdiff.ops.broadcast import broadcast_like

        value = broadcast_like(value, like)
    return value.astype(like.dtype) if value.dtype != like.dtype else value


class _UserOpBase(Op):
    """Shared by opaque ops: a user pullback (inputs, outputs, output gradients) and pushforward."""

    abstract = True

    def _seeds(self, node: Apply, output_grads: Sequence[Variable | None]) -> list[Variable]:
        from nbdiff.ops.broadcast import zeros_like

        return [zeros_like(out) if g is None else g for out, g in zip(node.outputs, output_grads)]

    def _user_args(self, values: Sequence[Variable]) -> Any:
        return values[0] if len(values) == 1 and self.nout == 1 else tuple(values)

    def _user_pullback(self, fn: Callable, node: Apply, output_grads: Sequence[Variable | None]) -> list:
        grads = fn(list(node.inputs), self._user_args(node.outputs), self._user_args(self._seeds(node, output_grads)))
        return _check_input_grads(self.name, fn, node, grads, "pullback")

    def _user_pushforward(self, fn: Callable, node: Apply, tangents: Sequence[Variable | None]) -> list:
        from nbdiff.ops.broadcast import zeros_like

        filled = [zeros_like(v) if t is None else t for v, t in zip(node.inputs, tangents)]
        result = _user_list(fn(list(node.inputs), self._user_args(node.outputs), filled), self.nout)
        if len(result) != self.nout:
            raise _definition_error(self.name, f"the pushforward returned {len(result)} value(s) for {self.nout}", fn)
        return [
            _checked_value(self.name, fn, t, out, f"the pushforward's value {j}")
            for j, (t, out) in enumerate(zip(result, node.outputs))
        ]


@dataclass(frozen=True, eq=False)
class CustomOp(_UserOpBase):
    """An opaque op: a NumPy function with declared output types and a user pullback (``nd.custom_op``)."""

    abstract = True
    label: str
    token: int
    fn: Callable = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    outputs: Any = field(default=None, compare=False, repr=False)
    arity: int | None = field(default=None, compare=False)
    n_out: int = field(default=1, compare=False)
    pullback_fn: Callable | None = field(default=None, compare=False, repr=False)
    pushforward_fn: Callable | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.label

    @property
    def nout(self) -> int:  # type: ignore[override]
        return self.n_out

    def params(self) -> dict[str, Any]:
        return {"op": self.label, "token": self.token}

    def describe(self) -> str:
        return self.label

    def infer(self, *inputs: Variable) -> list[TensorType]:
        if self.arity is not None and len(inputs) != self.arity:
            raise self.error(ShapeError, f"expected {self.arity} input(s), got {len(inputs)}", inputs)
        spec = self.outputs
        if callable(spec) and not isinstance(spec, TensorType):
            spec = spec(*(v.type for v in inputs))
        specs = [spec] if self.n_out == 1 and not _is_type_list(spec) else list(spec)
        if len(specs) != self.n_out:
            raise _definition_error(self.name, f"{len(specs)} output type(s) declared for {self.n_out} output(s)")
        return [_as_type(self.name, s) for s in specs]

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        results = _user_list(self.fn(*arrays), self.n_out) if self.n_out > 1 else [self.fn(*arrays)]
        if len(results) != self.n_out:
            raise node_error(ShapeError, self.name, f"returned {len(results)} value(s) for {self.n_out} output(s)")
        types = self.infer(*(_array_variable(a) for a in arrays))
        checked = []
        for j, (value, type_) in enumerate(zip(results, types)):
            value = np.asarray(value)
            if value.dtype.name != type_.dtype:
                if not np.can_cast(value.dtype, type_.dtype, "same_kind"):
                    raise node_error(
                        ShapeError, self.name, f"output {j} is {value.dtype}, declared {type_.dtype}", arrays
                    )
                value = value.astype(type_.dtype)
            if not type_.accepts(value.shape):
                raise node_error(ShapeError, self.name, f"output {j} has shape {value.shape}, declared {type_}", arrays)
            checked.append(value)
        return tuple(checked)

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list:
        if self.pullback_fn is None:
            raise node_error(
                GradientError, self.name, "no pullback= was given: it cannot be differentiated", node.inputs
            )
        return self._user_pullback(self.pullback_fn, node, output_grads)

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list:  # type: ignore[override]
        if self.pushforward_fn is None:
            from nbdiff.gradient import pushforward_by_transposition

            return pushforward_by_transposition(node, tangents)
        return self._user_pushforward(self.pushforward_fn, node, tangents)


def _is_type_list(spec: Any) -> bool:
    """Whether ``spec`` is a list of output types rather than one ``(dtype, shape)``."""
    if isinstance(spec, TensorType) or not isinstance(spec, (list, tuple)):
        return False
    return not (len(spec) == 2 and isinstance(spec[1], (tuple, list)) and not isinstance(spec[0], (tuple, list)))


def _array_variable(array: np.ndarray) -> Variable:
    """A placeholder variable of an array's type (for re-inferring declared output types at run time)."""
    from nbdiff.ops.fused import _placeholder

    return _placeholder(TensorType(array.dtype.name, tuple(array.shape)))


def custom_op(
    fn: Callable,
    *,
    outputs: Any,
    pullback: Callable | None = None,
    pushforward: Callable | None = None,
    nout: int = 1,
    name: str | None = None,
) -> CustomOp:
    """An opaque op running ``fn`` (NumPy arrays in, arrays out) with a pullback written with nbdiff ops.

    ``outputs``: the output types, ``(dtype, shape)`` (None for unknown sizes), a list of them for ``nout > 1``, or
    a function of the inputs' ``TensorType``s returning them. ``pullback(inputs, output, grad)`` returns the
    gradient of each input (a list, or one variable for one input), built with nbdiff ops, so it differentiates
    again; with several outputs ``output`` and ``grad`` are tuples. ``pushforward(inputs, output, tangents)``
    returns the output tangent(s); without one, forward mode transposes the pullback.
    """
    op_name = name or getattr(fn, "__name__", "custom_op")
    if not callable(fn):
        raise _definition_error(op_name, f"expected a function, got {type(fn).__name__}")
    arity = _positional_arity(fn, op_name)
    for what, user_fn, expected in (("pullback", pullback, 3), ("pushforward", pushforward, 3)):
        if user_fn is None:
            continue
        if not callable(user_fn):
            raise _definition_error(op_name, f"{what}= must be callable, got {type(user_fn).__name__}")
        got = _positional_arity(user_fn, op_name)
        if got is not None and got != expected:
            raise _definition_error(
                op_name, f"{what} takes {got} argument(s); it must take (inputs, output, grad)", user_fn
            )
    if not callable(outputs):
        specs = [outputs] if nout == 1 and not _is_type_list(outputs) else list(outputs)
        if len(specs) != nout:
            raise _definition_error(op_name, f"{len(specs)} output type(s) declared for {nout} output(s)", fn)
        for spec in specs:
            type_ = _as_type(op_name, spec)
            if type_.dtype not in SUPPORTED_DTYPES:
                raise _definition_error(op_name, f"unsupported output dtype {type_.dtype}", fn)
    return CustomOp(op_name, next(_TOKENS), fn, outputs, arity, nout, pullback, pushforward)


def _inline(inner_inputs: Sequence[Variable], inner_outputs: Sequence[Variable], inputs: Sequence[Variable]) -> list:
    """The inner graph rebuilt on ``inputs``: its outputs as functions of the given variables."""
    mapping: dict[int, Variable] = {id(a): b for a, b in zip(inner_inputs, inputs)}
    for node in toposort(list(inner_outputs), stop_at=list(inner_inputs)):
        args = [mapping.get(id(v), v) for v in node.inputs]
        new = node.op.make_node(*args)
        for old, out in zip(node.outputs, new.outputs):
            mapping[id(old)] = out
    return [mapping.get(id(v), v) for v in inner_outputs]


@dataclass(frozen=True, eq=False)
class GraphOp(_UserOpBase):
    """A subgraph run as one op (``nd.op_from_graph``): its gradient is the subgraph's own unless one is given."""

    abstract = True
    label: str
    token: int
    inner_inputs: tuple = field(default=(), compare=False, repr=False)
    inner_outputs: tuple = field(default=(), compare=False, repr=False)
    pullback_fn: Callable | None = field(default=None, compare=False, repr=False)
    pushforward_fn: Callable | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.label

    @property
    def nout(self) -> int:  # type: ignore[override]
        return len(self.inner_outputs)

    def params(self) -> dict[str, Any]:
        return {"op": self.label, "token": self.token}

    def describe(self) -> str:
        return self.label

    def infer(self, *inputs: Variable) -> list[TensorType]:
        if len(inputs) != len(self.inner_inputs):
            raise self.error(ShapeError, f"expected {len(self.inner_inputs)} input(s), got {len(inputs)}", inputs)
        for position, (var, inner) in enumerate(zip(inputs, self.inner_inputs)):
            if var.dtype != inner.dtype or var.ndim != inner.ndim:
                raise self.error(ShapeError, f"input {position} must be like {inner.type}, got {var.type}", inputs)
        key = tuple(v.type for v in inputs)
        cache = self.__dict__.setdefault("_types", {})  # the verifier re-infers every node after every pass
        if key not in cache:
            from nbdiff.ops.fused import _placeholder

            placeholders = [_placeholder(t) for t in key]
            cache[key] = [out.type for out in _inline(self.inner_inputs, self.inner_outputs, placeholders)]
        return list(cache[key])

    def _function(self):
        """The inner graph's interpreted function (built once)."""
        try:
            return self.__dict__["_inner_function"]
        except KeyError:
            from nbdiff.function import function

            f = function(list(self.inner_inputs), list(self.inner_outputs), backend="numpy")
            self.__dict__["_inner_function"] = f
            return f

    def perform(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(v) for v in self._function()(*arrays))

    def pullback(self, node: Apply, output_grads: Sequence[Variable | None]) -> list:
        if self.pullback_fn is not None:
            return self._user_pullback(self.pullback_fn, node, output_grads)
        from nbdiff.gradient import backprop

        outputs = _inline(self.inner_inputs, self.inner_outputs, node.inputs)
        seeds = [(out, g) for out, g in zip(outputs, output_grads) if g is not None and is_float(out.dtype)]
        wrt = [v for v in node.inputs if is_float(v.dtype)]
        acc = backprop(seeds, wrt)
        return [acc.total(v) if is_float(v.dtype) and not isinstance(v, Constant) else None for v in node.inputs]

    def pushforward(self, node: Apply, tangents: Sequence[Variable | None]) -> list:  # type: ignore[override]
        if self.pushforward_fn is not None:
            return self._user_pushforward(self.pushforward_fn, node, tangents)
        from nbdiff.gradient import pushforward_by_transposition

        return pushforward_by_transposition(node, tangents)


def op_from_graph(
    inputs: Sequence[Variable],
    outputs: Variable | Sequence[Variable],
    *,
    pullback: Callable | None = None,
    pushforward: Callable | None = None,
    name: str = "graph_op",
) -> GraphOp:
    """Wrap the graph from ``inputs`` to ``outputs`` as one op (PyTensor's ``OpFromGraph``): applying it runs the
    subgraph as a unit. Its gradient is the subgraph's own, or ``pullback(inputs, output, grad)`` as in
    ``nd.custom_op``."""
    inner_outputs = [outputs] if isinstance(outputs, Variable) else list(outputs)
    inner_inputs = list(inputs)
    for var in inner_inputs + inner_outputs:
        if not isinstance(var, Variable):
            raise _definition_error(name, f"inputs and outputs must be graph variables, got {type(var).__name__}")
    for var in inner_inputs:
        if var.owner is not None or isinstance(var, Constant):
            raise _definition_error(name, f"input {var.label()} is computed or constant: inputs must be free variables")
    known = {id(v) for v in inner_inputs}
    missing = [v for v in graph_inputs(inner_outputs) if not isinstance(v, Constant) and id(v) not in known]
    if missing:
        raise _definition_error(name, f"the outputs depend on {missing[0].label()}, which is not among the inputs")
    for what, user_fn in (("pullback", pullback), ("pushforward", pushforward)):
        if user_fn is not None and _positional_arity(user_fn, name) not in (None, 3):
            raise _definition_error(name, f"{what} must take (inputs, output, grad)", user_fn)
    return GraphOp(name, next(_TOKENS), tuple(inner_inputs), tuple(inner_outputs), pullback, pushforward)


__all__ = [
    "CustomOp",
    "ForeignFunction",
    "GraphOp",
    "UserElemwise",
    "custom_op",
    "elemwise",
    "foreign",
    "op_from_graph",
]
