"""One hierarchy for every error nbdiff raises at its users.

Each error built with :func:`node_error` names the op (or input argument), the shapes and dtypes involved and
the user's source line that created the offending node, so a mistake is placed at once, also inside gradients.
The classes also derive from the matching builtin (``TypeError``, ``ValueError``, ...) so generic handlers work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from nbdiff.graph.provenance import Provenance


class NbdiffError(Exception):
    """Base class of every error nbdiff raises on purpose.

    In IPython its traceback shows the user's frames only (see :mod:`nbdiff.tracebacks`; ``NBDIFF_FULL_TRACEBACK=1``
    shows all, as does ``full_traceback`` in force where the error is raised)."""

    def __init__(self, *args: object):
        from nbdiff.config import options

        super().__init__(*args)
        self.full_traceback = options().full_traceback  # read now: IPython renders after any option_context ended

    @property
    def _render_traceback_(self):
        """IPython's hook for a custom traceback: the user's frames, not nbdiff's (absent with full_traceback)."""
        from nbdiff.tracebacks import ipython_renderer

        return ipython_renderer(self)


class DTypeError(NbdiffError, TypeError):
    """An unknown dtype, a non-numeric array, or a dtype an op does not accept."""


class ShapeError(NbdiffError, ValueError):
    """Shapes that do not fit: broadcasting, matmul, reshape, concatenation, a wrong number of dimensions."""


class AxisError(ShapeError, IndexError):
    """An ``axis=`` argument outside the input's dimensions, or repeated."""


class IndexingError(NbdiffError, IndexError):
    """An index that does not fit the indexed variable (too many indices, out of bounds, bad type)."""


class GraphError(NbdiffError, TypeError):
    """A value that cannot be part of a graph, or a graph used where it cannot be (``bool(x)``, iteration)."""


class InputError(NbdiffError, TypeError):
    """A compiled function called with the wrong number, kind or shape of arguments."""


class MissingInputError(NbdiffError, ValueError):
    """An output depends on a variable that is not among the function's inputs."""


class GradientError(NbdiffError, ValueError):
    """A derivative that cannot be built: a non-scalar cost, a wrong seed shape, an unusable ``wrt``."""


class DisconnectedInputError(GradientError):
    """``grad`` asked for a variable the cost does not depend on (with ``disconnected="raise"``)."""


class UndefinedGradientError(GradientError):
    """A gradient that is not defined (e.g. with respect to an integer index) was used."""


class DomainError(NbdiffError, ValueError):
    """Values outside an op's domain at run time, which NumPy refuses (an integer to a negative integer power): the
    shapes fit, the values do not. A ``ValueError``, as NumPy's own, so ``except ValueError`` keeps working."""


class OpDefinitionError(NbdiffError, TypeError):
    """A user-defined op that cannot be built (``nbdiff.user_ops``): a function of the wrong arity, a derivative of
    the wrong shape or dtype, a name a compiled kernel cannot reach, a foreign function of an unsupported signature."""


class OpCheckError(NbdiffError, AssertionError):
    """A user-defined op's scalar function, vectorisation and derivatives disagree (``op.check``)."""


class ExecutionError(NbdiffError, RuntimeError):
    """An op failed while running; the message names the op, its inputs and the user's line."""


class BackendError(NbdiffError, RuntimeError):
    """A backend that was asked for explicitly is not available."""


def run_time_error_class(op: object, args: Sequence[object], exc: Exception) -> type[NbdiffError]:
    """The class of the error an op raised at run time: ``DomainError`` where the op says its inputs' values are
    outside its domain (its ``domain_violation(*args)``), ``ShapeError`` for another ``ValueError`` or an
    ``IndexError`` (shapes and indices known only at run time), else ``ExecutionError``."""
    if isinstance(exc, ValueError):
        violation = getattr(op, "domain_violation", None)
        if violation is not None and violation(*args) is not None:
            return DomainError
    if isinstance(exc, (ValueError, IndexError)):
        return ShapeError
    return ExecutionError


def describe_inputs(values: Iterable[object]) -> str:
    """Describe arrays or variables as ``float64[3, 4], int64[5]`` for error messages."""
    parts = []
    for value in values:
        dtype = getattr(value, "dtype", type(value).__name__)
        shape = getattr(getattr(value, "type", value), "shape", None)  # a variable's static shape, an array's shape
        if shape is None:
            parts.append(str(dtype))
        else:
            dims = ", ".join("?" if d is None else str(d) for d in shape)
            parts.append(f"{dtype}[{dims}]")
    return ", ".join(parts)


_MORE_ORIGINS = 3  # further construction sites of a shared node named in an error


def node_error(
    cls: type[NbdiffError],
    op_name: str,
    detail: str,
    inputs: Iterable[object] = (),
    provenance: Provenance | None = None,
) -> NbdiffError:
    """Build an error whose message names the op, the inputs' dtypes and shapes, and the user's line."""
    from nbdiff.graph.provenance import current_site

    inputs = list(inputs)
    lines = [f"{op_name}: {detail}"]
    if inputs:
        lines.append(f"  inputs: {describe_inputs(inputs)}")
    if provenance is not None:
        first, *others = provenance.ordered_for_now()
        lines.append(f"  created at {first.describe()}")
        lines.extend(f"  also built at {origin.describe()}" for origin in others[:_MORE_ORIGINS])
        if len(others) > _MORE_ORIGINS:
            lines.append(f"  (and at {len(others) - _MORE_ORIGINS} more places)")
    else:
        site = current_site()
        if site is not None:
            lines.append(f"  at {site.describe()}")
    return cls("\n".join(lines))
