"""The ``%%graph`` cell magic, driven through a real IPython shell (``run_cell_magic`` and ``run_cell``)."""

from __future__ import annotations

import linecache
import re
import sys
import traceback
import types

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import nbdiff as nd
from nbdiff.errors import DisconnectedInputError, ShapeError
from nbdiff.graph.types import max_ndim

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def ipython():
    """The process's IPython shell (history in memory) with ``%load_ext nbdiff`` done."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "nbdiff")
    return shell


@pytest.fixture
def shell(ipython, monkeypatch):
    """The shell, without a widget library (text listings), its user namespace restored after the test."""
    monkeypatch.setitem(sys.modules, "nbdiff.widgets", None)  # importing it now raises ModuleNotFoundError
    before = set(ipython.user_ns)
    yield ipython
    for name in set(ipython.user_ns) - before:
        del ipython.user_ns[name]


def graph(shell, line: str, cell: str):
    """Run a ``%%graph`` cell and return what it bound."""
    shell.run_cell_magic("graph", line, cell)
    return shell.user_ns[line.split()[0]]


MLP_CELL = """\
x: vector
W: matrix
h = tanh(W @ x)
y = sum(h ** 2)
"""


def mlp_reference(x0, W0):
    """y = sum(tanh(W x)^2) and its gradients, by hand with NumPy."""
    h = np.tanh(W0 @ x0)
    dpre = 2 * h * (1 - h**2)
    return np.sum(h**2), W0.T @ dpre, np.outer(dpre, x0)


# -- loading and help ---------------------------------------------------------------------------------------------
def test_load_ext_registers_the_cell_magic(ipython):
    assert "graph" in ipython.magics_manager.magics["cell"]
    assert "nbdiff" in ipython.extension_manager.loaded


def test_help_is_the_docstring_with_usage(ipython):
    doc = ipython.magics_manager.magics["cell"]["graph"].__doc__
    assert "%%graph NAME [--wrt INPUT ...]" in doc
    for text in ("x: vector", "W: matrix[float32]", "tensor3[float32, None, 8, 8]", "scalar[int64]", "--no-widget"):
        assert text in doc


# -- binding, values and gradients --------------------------------------------------------------------------------
def test_binds_a_function_with_values_and_gradients(shell):
    f = graph(shell, "f --wrt x W", MLP_CELL)
    assert isinstance(f, nd.Function)
    assert [v.name for v in f.inputs] == ["x", "W"]
    x0, W0 = RNG.normal(size=4), RNG.normal(size=(3, 4))
    y, gx, gW = f(x0, W0)
    y_ref, gx_ref, gW_ref = mlp_reference(x0, W0)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12)
    np.testing.assert_allclose(gW, gW_ref, rtol=1e-12)


def test_gradients_follow_wrt_order(shell):
    f = graph(shell, "f --wrt W x", MLP_CELL)
    x0, W0 = RNG.normal(size=2), RNG.normal(size=(5, 2))
    _, gW, gx = f(x0, W0)
    _, gx_ref, gW_ref = mlp_reference(x0, W0)
    np.testing.assert_allclose(gW, gW_ref, rtol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12)


def test_single_output_returns_one_array(shell):
    f = graph(shell, "f", "x: vector\ny = exp(x) * 2\n")
    x0 = RNG.normal(size=3)
    np.testing.assert_allclose(f(x0), 2 * np.exp(x0), rtol=1e-12)


def test_outputs_option_and_the_first_output_is_the_cost(shell):
    cell = "x: vector\nz = x * 3\nloss = mean(z ** 2)\nother = x + 1\n"
    f = graph(shell, "f --outputs loss z --wrt x", cell)
    x0 = RNG.normal(size=5)
    loss, z, gx = f(x0)
    np.testing.assert_allclose(loss, np.mean((3 * x0) ** 2), rtol=1e-12)
    np.testing.assert_allclose(z, 3 * x0, rtol=1e-12)
    np.testing.assert_allclose(gx, 18 * x0 / 5, rtol=1e-12)


def test_default_output_is_the_last_assigned_name_also_inside_blocks(shell):
    cell = "x: vector\nW: matrix\nh = x\nfor _ in range(2):\n    h = tanh(W @ h)\n"
    f = graph(shell, "f", cell)
    x0, W0 = RNG.normal(size=3), RNG.normal(size=(3, 3))
    np.testing.assert_allclose(f(x0, W0), np.tanh(W0 @ np.tanh(W0 @ x0)), rtol=1e-12)


def test_cell_variables_are_reachable_from_the_function_and_stay_out_of_the_user_namespace(shell):
    f = graph(shell, "f --wrt x", MLP_CELL)
    assert list(f.variables) == ["x", "W", "h", "y"]
    assert f.variables["x"] is f.inputs[0]
    assert f.variables["y"] is f.outputs[0]
    with pytest.raises(TypeError):
        f.variables["h"] = f.variables["y"]
    assert "h" not in shell.user_ns and "y" not in shell.user_ns


def test_run_cell_in_a_notebook_flow(shell):
    result = shell.run_cell("%%graph f --wrt x --no-widget\n" + MLP_CELL)
    assert result.success, result.error_in_exec
    assert isinstance(shell.user_ns["f"], nd.Function)


# -- annotations ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "annotation, dtype, shape",
    [
        ("vector", "float64", (None,)),
        ("matrix[float32]", "float32", (None, None)),
        ("matrix[3, 4]", "float64", (3, 4)),
        ("matrix['float32', None, 4]", "float32", (None, 4)),
        ("matrix[np.float32]", "float32", (None, None)),
        ("tensor3[float32, None, 8, 8]", "float32", (None, 8, 8)),
        ("tensor4", "float64", (None,) * 4),
        ("tensor[2, None]", "float64", (2, None)),
        ("scalar[int64]", "int64", ()),
        ("scalar", "float64", ()),
        ("vector[int32, 7]", "int32", (7,)),
    ],
)
def test_annotation_declares_an_input_of_that_type(shell, annotation, dtype, shape):
    f = graph(shell, "f", f"a: {annotation}\nb = a\n")
    (a,) = f.inputs
    assert (a.name, a.dtype, a.type.shape) == ("a", dtype, shape)


def test_inputs_in_order_of_appearance_and_int_inputs(shell):
    cell = "k: scalar[int64]\nx: vector\ny = sum(x) * k\n"
    f = graph(shell, "f", cell)
    assert [(v.name, v.dtype) for v in f.inputs] == [("k", "int64"), ("x", "float64")]
    np.testing.assert_allclose(f(3, np.array([1.0, 2.0])), 9.0)


def test_float32_is_kept_end_to_end(shell):
    f = graph(shell, "f --wrt W", "W: matrix[float32]\nv: vector[float32]\ny = sum(tanh(W @ v))\n")
    y, gW = f(np.ones((2, 3), np.float32), np.ones(3, np.float32))
    assert f.inputs[0].dtype == "float32"
    assert y.dtype == np.float32 and gW.dtype == np.float32


# -- the cell's namespace -----------------------------------------------------------------------------------------
def test_user_arrays_numbers_and_functions_are_usable(shell):
    shell.push({"A0": RNG.normal(size=(3, 3)), "scale": 0.5})
    shell.run_cell("import nbdiff as nd\ndef layer(v):\n    return nd.tanh(A0 @ v)\n")
    f = graph(shell, "f --wrt x", "x: vector\ny = sum(layer(x) * scale) + sum(A0 @ x)\n")
    A0, x0 = shell.user_ns["A0"], RNG.normal(size=3)
    y, gx = f(x0)
    t = np.tanh(A0 @ x0)
    np.testing.assert_allclose(y, 0.5 * t.sum() + (A0 @ x0).sum(), rtol=1e-12)
    np.testing.assert_allclose(gx, A0.T @ (0.5 * (1 - t**2)) + A0.sum(axis=0), rtol=1e-12)


def test_numpy_star_import_does_not_shadow_nbdiff_functions(shell):
    shell.run_cell("from numpy import *\nfrom math import exp")
    f = graph(shell, "f", "x: vector\ny = sum(exp(x)) + max(abs(x))\n")
    x0 = np.array([-3.0, 1.0, 2.0])
    np.testing.assert_allclose(f(x0), np.exp(x0).sum() + 3.0, rtol=1e-12)


def test_a_user_value_named_like_an_nbdiff_function_wins(shell):
    shell.push({"mean": np.array([1.0, 2.0]), "square": lambda v: v * v * 10})
    f = graph(shell, "f", "x: vector\ny = square(x - mean)\n")
    np.testing.assert_allclose(f(np.array([2.0, 2.0])), [10.0, 0.0])


# -- provenance: the cell and its line ----------------------------------------------------------------------------
def test_provenance_names_the_pseudo_file_and_cell_lines(shell):
    f = graph(shell, "prov --wrt x", MLP_CELL)
    site = f.variables["x"].provenance.site
    assert (site.filename, site.lineno, site.code) == ("<graph prov cell>", 2, "x: vector")
    h_site = f.variables["h"].provenance.site
    assert (h_site.label, h_site.code) == ("<graph prov cell>:4", "h = tanh(W @ x)")
    gradient_site = f.outputs[1].provenance.site
    assert gradient_site.label == "<graph prov cell>:5"  # built for the cost, on the cost's line
    assert f.outputs[1].provenance.is_gradient


def test_dprint_of_the_bound_function_names_cell_lines(shell, capsys):
    f = graph(shell, "listing --wrt x --no-widget", MLP_CELL)
    printed = capsys.readouterr().out
    listing = nd.graph.printing.dprint_str(f)
    assert printed.strip() == listing.strip()
    assert "input x" in listing and "@ <graph listing cell>:2" in listing
    assert "@ <graph listing cell>:4" in listing
    assert "[grad of tanh @ <graph listing cell>:4]" in listing


def test_shape_error_names_the_cell_line(shell):
    cell = "A: matrix[3, 4]\nv: vector[5]\nu = A @ v\n"
    with pytest.raises(ShapeError) as info:
        shell.run_cell_magic("graph", "bad", cell)
    assert "at <graph bad cell>:4: u = A @ v" in str(info.value)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert ("<graph bad cell>", 4, "u = A @ v") in [(frame.filename, frame.lineno, frame.line) for frame in frames]
    assert "bad" not in shell.user_ns


def test_run_cell_shows_the_error_and_binds_nothing(shell):
    result = shell.run_cell("%%graph broken\nx: vector[3]\ny = x + 1\nz = reshape(y, (4,))\n")
    assert isinstance(result.error_in_exec, ShapeError)
    assert "at Cell In[" in str(result.error_in_exec)
    assert ", line 4: z = reshape(y, (4,))" in str(result.error_in_exec)  # the editor's line: %%graph is line 1
    assert "broken" not in shell.user_ns


def test_python_errors_in_the_cell_propagate(shell):
    with pytest.raises(NameError, match="undefined_name"):
        shell.run_cell_magic("graph", "f", "x: vector\ny = x + undefined_name\n")
    with pytest.raises(SyntaxError) as info:
        shell.run_cell_magic("graph", "syntax", "x: vector\ny = (x +\n")
    assert (info.value.filename, info.value.lineno) == ("<graph syntax cell>", 3)


def test_disconnected_wrt_raises_the_gradient_error(shell):
    with pytest.raises(DisconnectedInputError):
        shell.run_cell_magic("graph", "f --wrt b", "a: vector\nb: vector\ny = sum(a)\n")


def test_an_edited_cell_gets_a_new_pseudo_file(shell):
    first = graph(shell, "edited", "x: vector\ny = x * 2\n")
    again = graph(shell, "edited", "x: vector\ny = x * 2\n")
    edited = graph(shell, "edited", "x: vector\n\ny = x * 3\n")
    assert first.inputs[0].provenance.site.filename == "<graph edited cell>"
    assert again.inputs[0].provenance.site.filename == "<graph edited cell>"
    site = edited.outputs[0].provenance.site
    assert (site.filename, site.lineno, site.code) == ("<graph edited cell #2>", 4, "y = x * 3")
    assert first.outputs[0].provenance.site.code == "y = x * 2"


# -- misuse: UsageError with a short message ----------------------------------------------------------------------
USAGE_ERRORS = [
    pytest.param("", MLP_CELL, "needs a NAME", id="no-name"),
    pytest.param("--wrt x f", MLP_CELL, "needs a NAME", id="name-after-wrt"),
    pytest.param("1f", MLP_CELL, "must be a Python identifier", id="bad-name"),
    pytest.param("f --bogus", MLP_CELL, "unrecognized arguments: --bogus", id="unknown-option"),
    pytest.param("f --backend gpu", MLP_CELL, "invalid choice: 'gpu'", id="unknown-backend"),
    pytest.param(
        "f --wrt h", MLP_CELL, "--wrt: 'h' is not an input of the cell; its inputs are x, W", id="wrt-non-input"
    ),
    pytest.param("f --wrt x x", MLP_CELL, "--wrt: 'x' is named twice", id="wrt-twice"),
    pytest.param(
        "f --wrt x", "x: vector\ny = x * 2\n", "--wrt: the output 'y' is float64[?], not a scalar", id="nonscalar"
    ),
    pytest.param(
        "f --outputs q", MLP_CELL, "--outputs: q not assigned in the cell (it assigns x, W, h, y)", id="outputs"
    ),
    pytest.param(
        "f",
        "x: vector\ny = sum(x)\nn = 3\n",
        "output 'n' is not a graph variable (type int)",
        id="not-a-variable",
    ),
    pytest.param("f", "  \n# nothing\n", "the cell is empty", id="empty"),
    pytest.param("f", "import math\nprint(math.pi)\n", "the cell assigns no name", id="no-assignment"),
    pytest.param("f", "x: vector\ny = x + z_outside\n", "depends on z_outside (float64[?]), which", id="undeclared"),
    pytest.param("f", "x: int\ny = x\n", "line 2: `x: int`: unknown input type", id="unknown-kind"),
    pytest.param(
        "f", "x: vector\nW: matrix[3]\n", "line 3: `W: matrix[3]`: matrix takes 2 dimension(s), got 1", id="rank"
    ),
    pytest.param("f", "x: vector[float16]\n", "line 2: `x: vector[float16]`: unknown dtype 'float16'", id="dtype"),
    pytest.param("f", "x: vector[n]\n", "unknown dtype 'n'", id="name-as-dim"),
    pytest.param("f", "x: vector[-1]\n", "a dimension must be a non-negative int literal or None, got `-1`", id="dim"),
    pytest.param("f", "k: scalar[3]\n", "scalar takes a dtype only", id="scalar-dims"),
    pytest.param("f", "t: tensor[float32]\n", "give tensor its dimensions", id="tensor-rank"),
    pytest.param("f", "x: vector\nx: matrix\n", "line 3: input 'x' is already declared on line 2", id="twice"),
    pytest.param("f", "x: vector = 3\n", "line 2: `x: vector = 3`: an input declaration takes no value", id="value"),
    pytest.param("f", "if True:\n    x: vector\n", "line 3: `x: vector`: declare inputs at the top level", id="nested"),
    pytest.param("f", "a.b: vector\n", "declare an input with a plain name", id="attribute"),
    # sizes no NumPy array can have: refused by the grammar, never allocated
    pytest.param(
        "f",
        "x: tensor99999999999\ny = x\n",
        f"line 2: `x: tensor99999999999`: too many dimensions: a NumPy array has at most {max_ndim()}",
        id="huge-rank",
    ),
    pytest.param("f", f"x: tensor{max_ndim() + 1}\n", "too many dimensions", id="rank-over-limit"),
    pytest.param("f", "x: tensor" + "9" * 5000 + "\n", "...`: too many dimensions", id="rank-of-5000-digits"),
    pytest.param(
        "f", f"x: tensor[{', '.join(['1'] * (max_ndim() + 1))}]\n", "but a NumPy array has at most", id="many-dims"
    ),
    pytest.param(
        "f",
        "x: vector[99999999999999999999999]\n",
        "shape (99999999999999999999999,) of float64 needs at least",
        id="huge-dim",
    ),
    pytest.param("f", "W: matrix[int8, 4611686018427387904, 4]\n", "a NumPy array holds at most", id="huge-product"),
    # names whose binding would break the user namespace
    pytest.param("__builtins__", MLP_CELL, "NAME '__builtins__' starts with '__'", id="builtins"),
    pytest.param("__name__", MLP_CELL, "NAME '__name__' starts with '__'", id="dunder"),
    pytest.param("__f", MLP_CELL, "NAME '__f' starts with '__'", id="private"),
    *(
        pytest.param(name, MLP_CELL, f"NAME {name!r} is one of IPython's own names", id=f"ipython-{name}")
        for name in ("In", "Out", "get_ipython", "exit", "quit", "_", "_i", "_ii", "_i3", "_5", "_oh", "_dh", "_ih")
    ),
    pytest.param("np", MLP_CELL, "NAME 'np' would replace the module numpy in the namespace", id="module"),
]


def test_an_unavailable_backend_raises_usage_error(shell, monkeypatch):
    """A named target that cannot run here (Numba missing, simulated) is a one-line UsageError naming the option."""
    from nbdiff.backends.cpu import CpuTarget

    monkeypatch.setattr(CpuTarget, "problem", classmethod(lambda cls: "needs Numba, which is not installed"))
    before = shell.user_ns.get("f", "unbound")
    try:
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("graph", "f --backend cpu", MLP_CELL)
    finally:
        restore(shell, "f", before)
    assert "--backend cpu: function: backend='cpu' needs Numba" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("line, cell, message", USAGE_ERRORS)
def test_misuse_raises_usage_error(shell, line, cell, message):
    shell.push({"z_outside": nd.vector("z_outside"), "np": np})
    name = line.split()[0] if line.split() else "f"
    before = shell.user_ns.get(name, "unbound")
    try:
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("graph", line, cell)
    finally:
        restore(shell, name, before)  # an accepted name would break the shared shell for every later test
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # a short, one-line message
    assert "f" not in shell.user_ns


def restore(shell, name: str, value: object) -> None:
    """Put ``name`` back as it was in the user namespace (``"unbound"``: absent)."""
    if value == "unbound":
        shell.user_ns.pop(name, None)
    else:
        shell.user_ns[name] = value


def test_a_refused_name_leaves_later_cells_working(shell):
    """``%%graph __builtins__`` used to bind the function over the builtins: every later cell failed."""
    builtins = shell.user_ns["__builtins__"]
    try:
        result = shell.run_cell("%%graph __builtins__ --no-widget\nx: vector\ny = sum(x)\n")
    finally:
        shell.user_ns["__builtins__"] = builtins
    assert isinstance(result.error_in_exec, UsageError)
    later = shell.run_cell("total = len([1, 2]) + abs(-1)")
    assert later.success and shell.user_ns["total"] == 3
    f = graph(shell, "g --no-widget", "x: vector\ny = sum(x)\n")
    assert f(np.ones(3)) == 3.0


def test_a_module_name_is_refused_only_while_it_holds_a_module(shell):
    shell.push({"nd": nd})
    with pytest.raises(UsageError, match="NAME 'nd' would replace the module nbdiff"):
        shell.run_cell_magic("graph", "nd", MLP_CELL)
    assert shell.user_ns["nd"] is nd
    shell.push({"nd": 3})
    assert isinstance(graph(shell, "nd --no-widget", MLP_CELL), nd.Function)  # rebinding a plain value is fine


def test_the_largest_rank_and_dims_numpy_allows_are_accepted(shell):
    f = graph(shell, "f --no-widget", f"x: tensor{max_ndim()}[int8]\nW: matrix[int8, 1, {2**62}]\ny = sum(x)\n")
    assert f.inputs[0].ndim == max_ndim() and f.inputs[1].shape == (1, 2**62)


def test_usage_error_through_run_cell(shell):
    result = shell.run_cell("%%graph --no-widget\nx: vector\ny = x\n")
    assert isinstance(result.error_in_exec, UsageError)


# -- display ------------------------------------------------------------------------------------------------------
def test_without_a_widget_library_the_text_listing_is_shown(shell, capsys):
    f = graph(shell, "f", "x: vector\ny = sum(x)\n")
    assert capsys.readouterr().out.strip() == nd.graph.printing.dprint_str(f).strip()


class _FakeWidget:
    """Stands in for the graph widget: records the function it was made for and shows a marker."""

    def __init__(self, function):
        self.function = function

    def _repr_pretty_(self, printer, cycle):
        printer.text(f"<graph widget of {self.function.name}>")


def test_the_widget_is_displayed_when_available_unless_no_widget(shell, capsys, monkeypatch):
    module = types.ModuleType("nbdiff.widgets")
    module.function_widget = _FakeWidget
    monkeypatch.setitem(sys.modules, "nbdiff.widgets", module)
    graph(shell, "shown", "x: vector\ny = sum(x)\n")
    assert capsys.readouterr().out.strip() == "<graph widget of shown>"
    f = graph(shell, "text --no-widget", "x: vector\ny = sum(x)\n")
    assert capsys.readouterr().out.strip() == nd.graph.printing.dprint_str(f).strip()


# -- cells named as IPython names them, lines counted as the editor counts them -----------------------------------
def test_plain_cells_are_named_as_ipython_names_them(shell):
    count = shell.execution_count
    shell.run_cell("import nbdiff as nd\nx = nd.vector('x')\ny = nd.tanh(x)\n")
    site = shell.user_ns["y"].owner.provenance.site
    assert site.label == f"In[{count}]:3"
    assert site.describe() == f"Cell In[{count}], line 3: y = nd.tanh(x)"
    assert f"@ In[{count}]:3" in nd.graph.printing.dprint_str(shell.user_ns["y"])
    result = shell.run_cell("nd.vector('v', shape=(3,)) + nd.vector('w', shape=(4,))\n")
    assert f"at Cell In[{shell.execution_count}], line 1: nd.vector" in str(result.error_in_exec)


def test_graph_cells_run_in_a_notebook_cell_are_named_after_it_with_editor_lines(shell):
    count = shell.execution_count
    result = shell.run_cell("%%graph named --wrt x\nx: vector\n\ny = sum(tanh(x) ** 2)\n")
    assert result.success
    f = shell.user_ns["named"]
    assert f.variables["x"].provenance.site.label == f"In[{count}]:2"
    listing = nd.graph.printing.dprint_str(f)
    assert f"[grad of tanh @ In[{count}]:4]" in listing
    filename = f.variables["x"].provenance.site.filename
    assert linecache.getline(filename, 1) == "%%graph named --wrt x\n"  # line 1 is the magic's, as in the editor


def test_outside_a_cell_graph_cells_keep_their_pseudo_file_with_editor_lines(shell):
    f = graph(shell, "pseudo", "x: vector\ny = exp(x)\n")
    site = f.outputs[0].provenance.site
    assert (site.label, site.code) == ("<graph pseudo cell>:3", "y = exp(x)")
    assert linecache.getline(site.filename, 1) == "%%graph pseudo\n"


# -- tracebacks show the user's frames ----------------------------------------------------------------------------
SHAPE_ERROR_CELL = "%%graph wrong\nA: matrix[3, 4]\nv: vector[5]\nu = A @ v\n"


def test_an_nbdiff_error_traceback_shows_the_users_frames_only(shell):
    result = shell.run_cell(SHAPE_ERROR_CELL)
    error = result.error_in_exec
    assert isinstance(error, ShapeError)
    full = traceback.extract_tb(error.__traceback__)
    assert any("nbdiff" in frame.filename for frame in full)  # the frames are there, only not shown
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error._render_traceback_()))  # without colours
    assert "u = A @ v" in shown and "line 4" in shown
    assert "nbdiff/" not in shown and "IPython/" not in shown
    assert "ShapeError: matmul: shapes (3, 4) and (5,) are not aligned" in shown


def test_full_traceback_option_keeps_every_frame(shell):
    with nd.option_context(full_traceback=True):
        result = shell.run_cell(SHAPE_ERROR_CELL)
    assert not hasattr(result.error_in_exec, "_render_traceback_")  # IPython formats the whole traceback
    result = shell.run_cell(SHAPE_ERROR_CELL)
    assert hasattr(result.error_in_exec, "_render_traceback_")


def test_user_traceback_keeps_the_users_frames_in_order():
    from nbdiff.tracebacks import user_traceback

    def helper():
        return nd.vector("a", shape=(2,)) + nd.vector("b", shape=(3,))

    with pytest.raises(ShapeError) as info:
        helper()
    kept = traceback.extract_tb(user_traceback(info.value.__traceback__))
    assert [frame.name for frame in kept] == ["test_user_traceback_keeps_the_users_frames_in_order", "helper"]


def test_a_run_time_error_and_its_cause_show_the_users_frames_only(shell):
    shell.run_cell(
        "import numpy as np\nimport nbdiff as nd\n"
        "x = nd.vector('x')\nA = nd.matrix('A')\nrun_time = nd.function([A, x], A @ x)\n"
    )
    result = shell.run_cell("run_time(np.ones((2, 3)), np.ones(4))\n")
    error = result.error_in_exec
    assert isinstance(error, ShapeError) and isinstance(error.__cause__, ValueError)
    cause_frames = traceback.extract_tb(error.__cause__.__traceback__)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error._render_traceback_()))
    assert "run_time(np.ones((2, 3)), np.ones(4))" in shown and "The above exception" in shown
    assert "nbdiff/" not in shown
    assert traceback.extract_tb(error.__cause__.__traceback__) == cause_frames  # the cause keeps its frames
