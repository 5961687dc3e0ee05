"""User-defined ops run compiled on the CPU backend: an ``nd.elemwise`` function and a libm function fuse into
kernels (their module text defines or binds them), an opaque op runs between kernels, and every answer equals the
interpreter's. All functions are created first so their kernels queue in the one worker, then waited for."""

from __future__ import annotations

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.backends.cpu_source import cpu_module_source, module_name
from nbdiff.backends.entry_source import entry_source
from nbdiff.function import UNCHECKED
from tests.backends.cpu_support import WAIT
from tests.ops.test_user_ops import cbrt, erf_c, sin_op, softplus

XS = np.linspace(0.3, 2.5, 9)


def elemwise_graph(x):
    return nd.sum(softplus(x) * nd.tanh(x))


def foreign_graph(x):
    return nd.sum(cbrt(x) * x + erf_c(x))


def opaque_graph(x):
    return nd.sum(nd.exp(sin_op(x * 2.0)) * x)


def graph_op_graph(x):
    a = nd.vector("a")
    op = nd.op_from_graph([a], nd.tanh(a) * a, name="tanh_times")
    return nd.sum(op(nd.sin(x)) * x)


BUILDERS = {"elemwise": elemwise_graph, "foreign": foreign_graph, "opaque": opaque_graph, "graph_op": graph_op_graph}


@pytest.fixture(scope="module")
def compiled():
    """Per builder: the compiled function of the value, gradient and Hessian-vector product, and the interpreted one."""
    functions = {}
    for label, build in BUILDERS.items():
        x = nd.vector("x", shape=XS.shape)
        y = build(x)
        g = nd.grad(y, x)
        hv = nd.grad(nd.sum(g * x), x)  # a second-order derivative
        outputs = [y, g, hv]
        functions[label] = (nd.function([x], outputs, backend="cpu"), nd.function([x], outputs, backend="numpy"))
    for f, _ in functions.values():
        f.wait(WAIT)
    return functions


@pytest.mark.parametrize("label", list(BUILDERS))
def test_user_ops_run_compiled_and_agree(compiled, label):
    f, reference = compiled[label]
    assert f.wait(WAIT) == UNCHECKED
    for got, expected in zip(f(XS), reference(XS)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert f.status == "compiled" and f.backend == "cpu"


def test_user_ops_fuse_with_other_elementwise_ops(compiled):
    f, _ = compiled["elemwise"]
    members = [{m.name for m in [ins.op for ins in k.op.program]} for k in f.kernels]
    assert any({"softplus", "tanh"} <= names for names in members), members
    kernel = next(k for k in f.kernels if any(ins.op is softplus or ins.op == softplus for ins in k.op.program))
    source = cpu_module_source(kernel.op, parallel=False, fastmath=False)
    assert f"def {softplus.symbol}(x):" in source
    f, _ = compiled["foreign"]
    sources = [cpu_module_source(k.op, parallel=False, fastmath=False) for k in f.kernels]
    assert any("ExternalFunction('cbrt'" in s for s in sources)


def test_an_edited_function_gets_another_kernel_module():
    def bump(x):
        return x + 1.0

    first = nd.elemwise(bump)

    def bump(x):  # noqa: F811
        return x + 2.0

    second = nd.elemwise(bump)
    x = nd.vector("x", shape=(3,))
    names = []
    for op in (first, second):
        (kernel,) = nd.function([x], nd.tanh(op(x)), backend="numpy").kernels
        names.append(module_name(kernel.op, parallel=False, fastmath=False))
    assert names[0] != names[1]


def test_scalar_entry_point_defines_the_user_functions():
    x = nd.scalar("x")
    y = softplus(x) * cbrt(x)
    outputs = [y, nd.grad(y, x)]
    f = nd.function([x], outputs, backend="cpu")
    text = entry_source(f.graph, fastmath=False).source
    assert softplus.symbol in text and cbrt.symbol in text
    assert f.wait(WAIT) == UNCHECKED
    expected = nd.function([x], outputs, backend="numpy")(1.7)
    for got, want in zip(f(1.7), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert f.status == "compiled" and f.backend == "cpu"
