"""nbdiff: symbolic differentiation for notebooks.

Build a graph with NumPy names (``nd.vector``, ``nd.tanh``, ``@``), differentiate it symbolically (``nd.grad``,
``nd.Rop``, ``nd.hessian``: the derivatives are graphs too), and call ``nd.function`` for an answer at once.
Importing nbdiff stays light: it imports NumPy only (no Numba, IPython or ipywidgets).
"""

from nbdiff.errors import NbdiffError
from nbdiff.function import Function, function
from nbdiff.gradient import Lop, Rop, grad, hessian, jacobian
from nbdiff.graph.basic import Constant, Variable, constant
from nbdiff.graph.printing import dprint
from nbdiff.ops import *  # noqa: F401,F403
from nbdiff.ops import __all__ as _ops_all
from nbdiff.testing import check_grads
from nbdiff.variables import matrix, scalar, tensor, vector

__version__ = "0.1.0"

__all__ = [
    "Constant",
    "Function",
    "Lop",
    "NbdiffError",
    "Rop",
    "Variable",
    "check_grads",
    "constant",
    "dprint",
    "function",
    "grad",
    "hessian",
    "jacobian",
    "matrix",
    "scalar",
    "tensor",
    "vector",
    *_ops_all,
]
