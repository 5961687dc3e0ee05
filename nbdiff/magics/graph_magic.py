"""The ``%%graph`` cell magic: build a graph from a cell, bind its ``nd.function``, show it.

The magic parses its line with ``magic_arguments``, runs the cell (:mod:`nbdiff.magics.cell`), assembles outputs
and gradients with nbdiff's own ``grad`` and ``function``, binds the result and displays it. Mistakes in using the
magic raise ``UsageError`` (IPython shows the short message, no traceback); errors the cell's code raises while
building the graph propagate unchanged and name the cell line.
"""

from __future__ import annotations

import ast
import importlib
import keyword
import re
from types import MappingProxyType, ModuleType
from typing import Any, Callable, Container, Mapping, Sequence

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from IPython.display import display

from nbdiff.errors import BackendError
from nbdiff.function import BACKENDS, Function, function
from nbdiff.gradient import grad
from nbdiff.graph.basic import Variable
from nbdiff.graph.printing import dprint_str
from nbdiff.graph.traversal import graph_inputs
from nbdiff.magics.cell import ParsedCell, execute, parse_cell, register_source

WIDGET_MODULES = ("nbdiff.widgets", "ipywidgets", "anywidget")  # missing ones mean: show text instead
ARGUMENTS = "NAME [--wrt INPUT ...] [--outputs VAR ...] [--backend {auto,numpy,cpu,cuda}] [--no-widget]"
IPYTHON_HISTORY_NAME = re.compile(r"_+|_i+|_i?\d+|_[iod]h")  # _, __, _i, _ii, _5, _i5, _oh, _dh, _ih


@magics_class
class GraphMagics(Magics):
    """The ``%%graph`` cell magic (registered by ``%load_ext nbdiff``)."""

    @magic_arguments()
    @kwds(usage=f"%%%(prog)s {ARGUMENTS}")  # IPython's help adds one % in front; argparse reads %% as %
    @argument("name", nargs="?", help="the name the function is bound to in the user namespace")
    @argument(
        "--wrt",
        nargs="+",
        default=[],
        metavar="INPUT",
        help="add the gradients of the first output (a scalar) with respect to these inputs, after the outputs",
    )
    @argument("--outputs", nargs="+", default=None, metavar="VAR", help="the outputs (default: the last name assigned)")
    @argument("--backend", choices=BACKENDS, default="auto", help="the backend of the nd.function (default auto)")
    @argument("--no-widget", action="store_true", help="print the text listing instead of the graph widget")
    @cell_magic
    def graph(self, line: str, cell: str) -> None:
        """Build a graph from the cell, bind NAME to its nd.function and show the graph.

        Inputs are the cell's annotated names, in order of appearance (the annotation is read, never evaluated):

            x: vector                        # float64, length known at run time
            W: matrix[float32]               # a dtype first, then the dimensions if any
            A: matrix[3, 4]                  # a static shape; None marks a dimension known at run time
            T: tensor3[float32, None, 8, 8]  # tensorN has rank N; tensor[...] takes its rank from its dimensions
            k: scalar[int64]

        Outputs are the variables named by --outputs, otherwise the last name the cell assigns. With --wrt, the
        gradients of the first output (a scalar) with respect to the named inputs follow the outputs. NAME takes
        the inputs in declaration order and returns one array for a single output, otherwise a list (outputs,
        then gradients in --wrt order). NAME.variables maps the names of the cell's graph variables to them;
        NAME.output_names names the outputs as the drawing does (y, gradient of y w.r.t. x).

        The cell sees nbdiff's functions unqualified (sum, exp, tanh, grad, ...) and the user's names: arrays and
        numbers act as constants, and functions that build graphs can be called. A user's name wins over nbdiff's,
        except a Python, math or NumPy function (sum, or exp after `from numpy import *`): those cannot take graph
        variables, so nbdiff's symbolic function of that name stays. Only NAME reaches the user namespace.

        Node provenance, nd.dprint, error messages and tracebacks name the cell as IPython names cells
        (In[15]:3) and count lines as the editor does, the %%graph line being line 1 (outside a notebook cell,
        the pseudo-file <graph NAME cell>). Example:

            %%graph f --wrt x
            x: vector
            W: matrix[3, None]
            y = sum(tanh(W @ x) ** 2)

        binds f, with f(x0, W0) -> [y, dy/dx].
        """
        args = parse_argstring(self.graph, line)
        name = function_name(args.name, self.shell.user_ns, self.shell.user_ns_hidden)
        filename = register_source(name, cell, f"%%graph {line}", self.shell)
        built = build_function(cell, name, self.shell.user_ns, args.outputs, args.wrt, args.backend, filename)
        self.shell.user_ns[name] = built
        show(built, widget=not args.no_widget)


def function_name(name: str | None, user_ns: Mapping[str, Any], hidden: Container[str]) -> str:
    """The NAME argument, checked: a Python identifier that is not a keyword, and whose binding breaks nothing in
    the user namespace ``user_ns``: no ``__`` name (``__builtins__``, ``__name__``), none of IPython's own names
    (``hidden``: ``In``, ``Out``, ``get_ipython``, ``exit``, ...; output history ``_``, ``_5``, ``_i5``), no module."""
    if name is None:
        raise UsageError("%%graph needs a NAME to bind the function to: %%graph NAME [--wrt x ...] (NAME first)")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"%%graph: NAME must be a Python identifier, got {name!r}")
    if name.startswith("__"):
        raise UsageError(f"%%graph: NAME {name!r} starts with '__': Python and IPython own such names; choose another")
    if name in hidden or IPYTHON_HISTORY_NAME.fullmatch(name):
        raise UsageError(f"%%graph: NAME {name!r} is one of IPython's own names; choose another")
    if isinstance(user_ns.get(name), ModuleType):
        module = user_ns[name].__name__
        raise UsageError(f"%%graph: NAME {name!r} would replace the module {module} in the namespace; choose another")
    return name


def build_function(
    source: str,
    name: str,
    user_ns: Mapping[str, Any],
    outputs: Sequence[str] | None = None,
    wrt: Sequence[str] = (),
    backend: str = "auto",
    filename: str | None = None,
) -> Function:
    """Run a ``%%graph`` cell and return the ``nd.function`` of its outputs (and gradients) of its inputs.

    ``filename`` is the name ``register_source`` gave the cell (default: ``<graph NAME cell>``)."""
    filename = filename or register_source(name, source, f"%%graph {name}")
    cell = parse_cell(source, filename)
    output_names = select_outputs(cell, outputs)
    check_wrt(cell, wrt)
    namespace, inputs = execute(cell, user_ns)
    results = [output_variable(namespace, output) for output in output_names]
    check_declared(results, output_names, inputs)
    if wrt:
        by_name = dict(zip(cell.input_names, inputs))
        results += gradients(cell, output_names[0], results[0], [by_name[n] for n in wrt])
    try:
        built = function(inputs, results if len(results) > 1 else results[0], backend=backend, name=name)
    except BackendError as exc:
        raise UsageError(f"--backend {backend}: {exc}") from None
    variables = {n: namespace[n] for n in cell.bound_names if isinstance(namespace.get(n), Variable)}
    built.variables = MappingProxyType(variables)  # type: ignore[attr-defined]
    built.output_names = output_labels(output_names, wrt)  # type: ignore[attr-defined]
    return built


def output_labels(output_names: Sequence[str], wrt: Sequence[str]) -> tuple[str, ...]:
    """What the drawing calls each output: the cell's names, then ``gradient of COST w.r.t. INPUT`` per --wrt."""
    return tuple(output_names) + tuple(f"gradient of {output_names[0]} w.r.t. {name}" for name in wrt)


def select_outputs(cell: ParsedCell, outputs: Sequence[str] | None) -> list[str]:
    """The output names: those given, each bound by the cell, or else the last name the cell binds."""
    bound = cell.bound_names
    if outputs is None:
        last = cell.last_bound()
        if last is None:
            raise UsageError("%%graph: the cell assigns no name; assign the output (y = ...) or name it with --outputs")
        return [last]
    unknown = [output for output in outputs if output not in bound]
    if unknown:
        assigned = ", ".join(bound) or "nothing"
        raise UsageError(f"--outputs: {', '.join(unknown)} not assigned in the cell (it assigns {assigned})")
    return list(outputs)


def check_wrt(cell: ParsedCell, wrt: Sequence[str]) -> None:
    """Each --wrt name must be a declared input, named once."""
    declared = cell.input_names
    for position, input_name in enumerate(wrt):
        if input_name not in declared:
            inputs = ", ".join(declared) if declared else "none (declare them as x: vector)"
            raise UsageError(f"--wrt: {input_name!r} is not an input of the cell; its inputs are {inputs}")
        if input_name in wrt[:position]:
            raise UsageError(f"--wrt: {input_name!r} is named twice")


def output_variable(namespace: Mapping[str, Any], output: str) -> Variable:
    """The graph variable the cell bound to ``output``."""
    value = namespace.get(output)
    if not isinstance(value, Variable):
        raise UsageError(
            f"%%graph: output {output!r} is not a graph variable (type {type(value).__name__}); "
            f"name the outputs with --outputs"
        )
    return value


def check_declared(results: Sequence[Variable], output_names: Sequence[str], inputs: Sequence[Variable]) -> None:
    """Every input the outputs depend on must be declared in the cell (not taken from the user namespace)."""
    declared = {id(v) for v in inputs}
    for output, variable in zip(output_names, results):
        for root in graph_inputs([variable]):
            if root.is_input and id(root) not in declared:
                raise UsageError(
                    f"%%graph: output {output!r} depends on {root.label()} ({root.type}), which the cell does not "
                    f"declare; declare the inputs in the cell (x: vector)"
                )


def gradients(cell: ParsedCell, cost_name: str, cost: Variable, wrt: list[Variable]) -> list[Variable]:
    """``grad(cost, wrt)``, run as if written on the cost's line, so gradient nodes name that cell line."""
    if cost.ndim != 0:
        raise UsageError(
            f"--wrt: the output {cost_name!r} is {cost.type}, not a scalar; sum it, or put a scalar output "
            f"first with --outputs"
        )
    expression = ast.parse("grad(cost, wrt)", mode="eval")
    ast.increment_lineno(expression, cell.last_line_of(cost_name) - 1)
    code = compile(expression, cell.filename, "eval")
    return eval(code, {"grad": grad, "cost": cost, "wrt": wrt})


def show(built: Function, widget: bool = True) -> None:
    """Display the function's graph widget, or print its text listing (``--no-widget``, or no widget library)."""
    make_widget = widget_maker() if widget else None
    if make_widget is None:
        print(dprint_str(built))
    else:
        display(make_widget(built))


def widget_maker() -> Callable[[Function], Any] | None:
    """``nbdiff.widgets.function_widget`` when it and its widget library can be imported, else None."""
    try:
        widgets = importlib.import_module("nbdiff.widgets")
    except ModuleNotFoundError as exc:
        if exc.name in WIDGET_MODULES:
            return None
        raise
    return getattr(widgets, "function_widget", None)
