"""nbdiff: symbolic differentiation for notebooks.

Build a graph with NumPy names (``nd.vector``, ``nd.tanh``, ``@``), differentiate it symbolically (``nd.grad``,
``nd.Rop``, ``nd.hessian``: the derivatives are graphs too), and call ``nd.function`` for an answer at once.
Importing nbdiff stays light: it imports NumPy only (no Numba, IPython or ipywidgets).
"""

from nbdiff.config import option_context, options
from nbdiff.errors import NbdiffError
from nbdiff.function import Function, function
from nbdiff.gradient import Lop, Rop, grad, hessian, jacobian
from nbdiff.graph.basic import Constant, Variable, constant
from nbdiff.graph.printing import dprint
from nbdiff.ops import *  # noqa: F401,F403
from nbdiff.ops import __all__ as _ops_all
from nbdiff.ops.scan import scan
from nbdiff.testing import check_grads
from nbdiff.user_ops import custom_op, elemwise, foreign, op_from_graph
from nbdiff.variables import matrix, scalar, tensor, vector
from nbdiff.vmap import vmap

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """``%load_ext nbdiff`` (or ``c.InteractiveShellApp.extensions = ["nbdiff"]``): register the ``%%graph`` magic.

    IPython is imported here, when the extension is loaded, so ``import nbdiff`` stays light.
    """
    from nbdiff.magics import load_ipython_extension as register_magics

    register_magics(ipython)


def __getattr__(name: str):
    """The widgets (``nd.draw``, ``nd.status_panel``, ``nd.rewrite_stepper``, ``nd.plot``) and ``nd.dask`` load on
    first use (PEP 562), so ``import nbdiff`` imports neither ipywidgets, matplotlib nor dask."""
    import importlib

    if name == "dask":  # the extra nbdiff[dask]: an ImportError naming it where dask is missing
        return importlib.import_module("nbdiff.dask")

    module = importlib.import_module("nbdiff.widgets")._LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'nbdiff' has no attribute {name!r}")


__all__ = [
    "Constant",
    "Function",
    "Lop",
    "NbdiffError",
    "Rop",
    "Variable",
    "check_grads",
    "constant",
    "custom_op",
    "dprint",
    "elemwise",
    "foreign",
    "function",
    "grad",
    "hessian",
    "jacobian",
    "op_from_graph",
    "option_context",
    "options",
    "matrix",
    "scalar",
    "scan",
    "tensor",
    "vector",
    "vmap",
    *_ops_all,
]
