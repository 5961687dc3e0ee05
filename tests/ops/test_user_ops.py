"""User-defined ops (``nbdiff.user_ops``) built, interpreted and differentiated to second order; mistakes found
when an op is defined raise ``OpDefinitionError`` naming the op and the user's line."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.errors import GradientError, OpCheckError, OpDefinitionError
from nbdiff.graph.traversal import toposort
from nbdiff.user_ops import CustomOp, GraphOp, UserElemwise

SCALE = 0.5


@nd.elemwise(derivatives=[lambda x: nd.sigmoid(x)])
def softplus(x):
    """log(1 + exp(x)), linear above 30 (where exp would lose the 1)."""
    if x > 30.0:
        return x
    return math.log1p(math.exp(x))


@nd.elemwise(
    derivatives=[lambda x, a: SCALE * a * nd.cos(SCALE * a * x), lambda x, a: SCALE * x * nd.cos(SCALE * a * x)]
)
def scaled_sin(x, a):
    """sin(SCALE * a * x): two inputs and a global number."""
    return math.sin(SCALE * a * x)


@nd.elemwise(derivatives=[lambda x: nd.cos(x) + 2.0])
def uses_other(x):
    """An elementwise function calling another one (a global op) and a builtin."""
    return scaled_sin(x, 2.0) + abs(x) * 0.0 + 2.0 * x


def libm() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("m"))


def c_function(name: str, nargs: int = 1):
    """A libm function of doubles with its ctypes signature declared."""
    fn = getattr(libm(), name)
    fn.argtypes = (ctypes.c_double,) * nargs
    fn.restype = ctypes.c_double
    return fn


cbrt = nd.foreign(c_function("cbrt"), derivatives=[lambda x, y: 1.0 / (3.0 * y * y)])
erf_c = nd.foreign(c_function("erf"), derivatives=[lambda x: 2.0 / math.sqrt(math.pi) * nd.exp(-x * x)])
hypot = nd.foreign(c_function("hypot", 2), derivatives=[lambda x, y, h: x / h, lambda x, y, h: y / h], name="hypot")

XS = np.linspace(-2.0, 2.5, 7)


# ---------------------------------------------------------------------------------------------------------------
# nd.elemwise
# ---------------------------------------------------------------------------------------------------------------
def test_elemwise_values_check_and_second_order_gradients():
    softplus.check(XS)
    scaled_sin.check(XS, XS[::-1])
    nd.check_grads(lambda x: softplus(x) * nd.tanh(x), [XS], order=3)
    nd.check_grads(lambda x, a: scaled_sin(x, a) * x, [XS, XS[::-1] + 0.1], order=2)
    x = nd.vector("x")
    value = nd.function([x], softplus(x), backend="numpy")(XS)
    np.testing.assert_allclose(value, np.log1p(np.exp(XS)))


def test_elemwise_reads_other_ops_builtins_and_numbers():
    uses_other.check(XS)
    nd.check_grads(lambda x: uses_other(x), [XS], order=2)
    text = "\n".join(uses_other.module_code())
    assert scaled_sin.symbol in text and "= 0.5" in text and "numba.njit" in text


def test_scalar_function_derivative_becomes_an_elemwise_op():
    def d_cube(x):
        return 3.0 * math.pow(x, 2)

    @nd.elemwise(derivatives=[d_cube])
    def cube(x):
        return x * x * x

    cube.check(XS)
    nd.check_grads(lambda x: cube(x), [XS], order=1)
    assert isinstance(cube.derivatives[0], UserElemwise)
    x = nd.vector("x")
    with pytest.raises(GradientError, match="dcube_0"):
        nd.grad(nd.sum(nd.grad(nd.sum(cube(x)), x)), x)


def test_elemwise_identity_follows_the_source():
    def twice(x):
        return 2.0 * x

    first, again = nd.elemwise(twice), nd.elemwise(twice)
    assert first == again and first.key == again.key

    def twice(x):  # noqa: F811  (an edited function of the same name)
        return 2.0 * x + 0.0

    edited = nd.elemwise(twice)
    assert edited != first and edited.key != first.key
    assert edited.describe() != first.describe()  # the kernel's canonical text, hence its module name, changes


def test_elemwise_numpy_implementation_is_checked():
    @nd.elemwise(numpy=lambda x: np.exp(x))
    def exp_like(x):
        return math.exp(x)

    exp_like.check(XS)

    @nd.elemwise(numpy=lambda x: np.exp(x) + 1e-3)
    def wrong(x):
        return math.exp(x)

    with pytest.raises(OpCheckError, match="wrong"):
        wrong.check(XS)


def test_elemwise_derivative_that_disagrees_fails_the_check():
    @nd.elemwise(derivatives=[lambda x: nd.cos(x) * 1.01])
    def my_sin(x):
        return math.sin(x)

    with pytest.raises(OpCheckError, match="derivative 0"):
        my_sin.check(XS)


def test_interpreting_a_user_op_does_not_import_numba(tmp_path):
    code = (
        "import math, sys, numpy as np, nbdiff as nd\n"
        "@nd.elemwise(derivatives=[lambda x: nd.cos(x)])\n"
        "def s(x):\n    return math.sin(x)\n"
        "x = nd.vector('x')\n"
        "print(nd.function([x], nd.grad(nd.sum(s(x)), x), backend='numpy')(np.ones(3)))\n"
        "assert 'numba' not in sys.modules\n"
    )
    path = tmp_path / "user_op_no_numba.py"
    path.write_text(code)
    environment = {**os.environ, "PYTHONPATH": str(Path(nd.__file__).parents[1])}
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr


def test_a_domain_error_in_the_interpreter_gives_nan_as_compiled_code_does():
    @nd.elemwise
    def my_log(x):
        return math.log(x)

    x = nd.vector("x")
    value = nd.function([x], my_log(x), backend="numpy")(np.array([-1.0, 1.0]))
    assert np.isnan(value[0]) and value[1] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# nd.custom_op and nd.op_from_graph
# ---------------------------------------------------------------------------------------------------------------
def np_sin_sum(x):
    return np.sin(x)


sin_op = nd.custom_op(
    np_sin_sum,
    outputs=lambda t: (t.dtype, t.shape),
    pullback=lambda inputs, out, g: [g * nd.cos(inputs[0])],
    name="np_sin",
)


def test_custom_op_with_pullback_to_second_order():
    nd.check_grads(lambda x: sin_op(x) * x, [XS], order=2)
    x = nd.vector("x")
    assert isinstance(sin_op(x).owner.op, CustomOp)
    np.testing.assert_allclose(nd.function([x], sin_op(x), backend="numpy")(XS), np.sin(XS))


def test_custom_op_with_several_outputs_and_a_pushforward():
    op = nd.custom_op(
        lambda x, y: (x * y, x + y),
        outputs=[("float64", (None,)), ("float64", (None,))],
        nout=2,
        pullback=lambda ins, outs, gs: [gs[0] * ins[1] + gs[1], gs[0] * ins[0] + gs[1]],
        pushforward=lambda ins, outs, ts: [ts[0] * ins[1] + ts[1] * ins[0], ts[0] + ts[1]],
        name="prod_and_sum",
    )

    def build(x, y):
        p, s = op(x, y)
        return p * s

    nd.check_grads(build, [XS, XS[::-1]], order=2)


def test_op_from_graph_uses_the_subgraph_gradient_or_a_given_one():
    a, b = nd.vector("a"), nd.vector("b")
    inner = nd.tanh(a) * b + nd.exp(b)
    op = nd.op_from_graph([a, b], inner, name="tanh_mix")
    nd.check_grads(lambda x, y: op(x, y) * x, [XS, XS[::-1] / 3], order=2)
    x, y = nd.vector("x"), nd.vector("y")
    out = op(x, y)
    assert isinstance(out.owner.op, GraphOp)
    expected = np.tanh(XS) * XS[::-1] + np.exp(XS[::-1])
    np.testing.assert_allclose(nd.function([x, y], out, backend="numpy")(XS, XS[::-1]), expected)
    custom = nd.op_from_graph([a], nd.sin(a), pullback=lambda ins, out, g: [g * nd.cos(ins[0])], name="my_sin")
    nd.check_grads(lambda x: custom(x) * x, [XS], order=2)
    assert any(n.op.name == "cos" for n in toposort([nd.grad(nd.sum(custom(x)), x)]))  # the given pullback


def test_custom_op_output_checked_against_the_declared_type():
    op = nd.custom_op(lambda x: x[:2], outputs=("float64", (3,)), name="cut")
    x = nd.vector("x")
    with pytest.raises(nd.NbdiffError, match="cut"):
        nd.function([x], op(x), backend="numpy")(XS)


# ---------------------------------------------------------------------------------------------------------------
# nd.foreign
# ---------------------------------------------------------------------------------------------------------------
def test_foreign_functions_from_libm_to_second_order():
    positive = np.linspace(0.5, 3.0, 6)
    cbrt.check(positive)
    erf_c.check(XS)
    hypot.check(XS[:6], positive)
    nd.check_grads(lambda x: cbrt(x) * x, [positive], order=2)
    nd.check_grads(lambda x: erf_c(x) * nd.sin(x), [XS], order=2)
    nd.check_grads(lambda x, y: hypot(x, y), [XS[:6], positive], order=2)
    x = nd.vector("x")
    np.testing.assert_allclose(nd.function([x], cbrt(x), backend="numpy")(positive), np.cbrt(positive))
    assert "load_library_permanently" in "\n".join(cbrt.module_code())


def test_foreign_signature_given_as_text_and_through_cffi():
    fn = libm().exp  # no argtypes: the signature is declared
    op = nd.foreign(fn, signature="float64(float64)", derivatives=[lambda x, y: y], name="c_exp")
    nd.check_grads(lambda x: op(x), [XS], order=2)
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("double tanh(double);")
    lib = ffi.dlopen(ctypes.util.find_library("m"))
    op = nd.foreign(lib.tanh, derivatives=[lambda x, y: 1.0 - y * y], name="c_tanh")
    op.check(XS)
    nd.check_grads(lambda x: op(x), [XS], order=2)
    ffi.cdef("char *strerror(int);")
    with pytest.raises(OpDefinitionError, match="unsupported signature") as info:
        nd.foreign(ffi.dlopen(None).strerror, name="c_strerror")
    assert_names_op_and_line(info, "c_strerror")


# ---------------------------------------------------------------------------------------------------------------
# Mistakes, found at definition
# ---------------------------------------------------------------------------------------------------------------
THIS_FILE = "test_user_ops.py"


def assert_names_op_and_line(info, op_name: str) -> None:
    message = str(info.value)
    assert message.startswith(f"{op_name}:"), message
    assert THIS_FILE in message, message


def test_wrong_arity_is_refused():
    def two(x, y):
        return x + y

    with pytest.raises(OpDefinitionError) as info:
        nd.elemwise(two, derivatives=[lambda x, y: 1.0])
    assert_names_op_and_line(info, "two")
    with pytest.raises(OpDefinitionError, match="takes 4 argument") as info:
        nd.elemwise(two, derivatives=[lambda x, y: 1.0, lambda x, y, z, w: 1.0])
    assert_names_op_and_line(info, "two")
    with pytest.raises(OpDefinitionError, match="fixed number") as info:
        nd.elemwise(lambda *xs: 0.0, name="varargs")
    with pytest.raises(OpDefinitionError, match="must take"):
        nd.custom_op(np.sin, outputs=("float64", (None,)), pullback=lambda g: g, name="bad_pullback")


def test_derivative_of_the_wrong_dtype_or_shape_is_refused():
    def f(x):
        return x

    with pytest.raises(OpDefinitionError, match="dtype int64") as info:
        nd.elemwise(f, derivatives=[lambda x: (x > 0).astype("int64")])
    assert_names_op_and_line(info, "f")
    with pytest.raises(OpDefinitionError, match="must be elementwise") as info:
        nd.elemwise(f, derivatives=[lambda x: nd.sum(x)])
    assert_names_op_and_line(info, "f")


def test_pullback_of_the_wrong_shape_is_refused_when_differentiated():
    op = nd.custom_op(np.sin, outputs=lambda t: t, pullback=lambda ins, out, g: [nd.sum(g)], name="bad_sin")
    x = nd.vector("x")
    with pytest.raises(OpDefinitionError, match="bad_sin") as info:
        nd.grad(nd.sum(op(x)), x)
    assert THIS_FILE in str(info.value)


def test_derivative_that_is_neither_an_expression_nor_a_scalar_function():
    def f(x):
        return x

    def broken(x):
        return nd.exp(x) + "one"

    with pytest.raises(OpDefinitionError, match="derivative 0 refuses graph variables") as info:
        nd.elemwise(f, derivatives=[broken])
    assert_names_op_and_line(info, "f")


def test_unreachable_global_and_lambda_are_refused():
    table = [1.0, 2.0]

    def reads_list(x):
        return x * table[0]

    with pytest.raises(OpDefinitionError, match="'table'") as info:
        nd.elemwise(reads_list)
    assert_names_op_and_line(info, "reads_list")
    with pytest.raises(OpDefinitionError, match="with def"):
        nd.elemwise(lambda x: x, name="anonymous")


def test_unsupported_ctypes_signature_is_refused():
    fn = libm().cbrt
    with pytest.raises(OpDefinitionError, match="no argtypes") as info:
        nd.foreign(fn, name="cbrt_untyped")
    assert_names_op_and_line(info, "cbrt_untyped")
    fn = libm().frexp
    fn.argtypes = (ctypes.c_double, ctypes.POINTER(ctypes.c_int))
    fn.restype = ctypes.c_double
    with pytest.raises(OpDefinitionError, match="unsupported signature") as info:
        nd.foreign(fn)
    assert_names_op_and_line(info, "frexp")
    with pytest.raises(OpDefinitionError, match="unsupported type"):
        nd.foreign(libm().cbrt, signature="complex128(float64)", name="cbrt_complex")
    with pytest.raises(OpDefinitionError, match="ctypes or CFFI"):
        nd.foreign(math.cbrt if hasattr(math, "cbrt") else math.sqrt)
