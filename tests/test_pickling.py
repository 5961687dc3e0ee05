"""Functions, graphs and variables pickle: nodes rebuild through hash-consing, a function compiles again (or loads
its kernels from the disk cache) wherever it is unpickled, and nothing of a thread, lock or runner travels."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nbdiff as nd
from nbdiff.graph.basic import Constant
from nbdiff.graph.printing import dprint_str
from nbdiff.runtime.compile_status import UNCHECKED

WAIT = 120.0


def mlp_cost():
    """A small graph with a matmul, a reduction, the cross-entropy pattern, constants, and its gradients."""
    x, w = nd.vector("x"), nd.matrix("W", shape=(None, 3))
    scores = w @ x
    cost = nd.sum(nd.tanh(scores) * 2.0) - nd.log_softmax(scores)[0]
    return [x, w], [cost, *nd.grad(cost, [x, w])]


def arguments():
    return np.linspace(-1.0, 1.0, 3), np.arange(12.0).reshape(4, 3) / 12.0


def test_a_pickled_function_answers_as_the_original():
    inputs, outputs = mlp_cost()
    f = nd.function(inputs, outputs, name="cost", backend="numpy")
    g = pickle.loads(pickle.dumps(f))
    assert (g.name, g.requested_backend, g.status) == ("cost", "numpy", "interpreting")
    assert [v.name for v in g.inputs] == ["x", "W"] and [v.type for v in g.inputs] == [v.type for v in f.inputs]
    for got, expected in zip(g(*arguments()), f(*arguments())):
        np.testing.assert_array_equal(got, expected)
    assert dprint_str(g.graph) == dprint_str(f.graph)


def test_unpickled_nodes_rebuild_through_hash_consing():
    x = nd.vector("x")
    y = nd.tanh(x) * 2.0
    z = nd.exp(y)
    x2, y2, z2 = pickle.loads(pickle.dumps([x, y, z]))
    assert x2 is not x and y2.owner.inputs[0].owner.inputs[0] is x2  # one input within one pickle
    assert nd.tanh(x2) * 2.0 is y2 and z2.owner.inputs[0] is y2  # the same nodes as built again here
    two = y2.owner.inputs[1]
    assert isinstance(two, Constant) and two is nd.constant(2.0)  # small constants by value
    assert y2.provenance.site == y.provenance.site  # the pickled origins are kept
    big = nd.constant(np.arange(5000.0))
    assert np.array_equal(pickle.loads(pickle.dumps(big)).data, big.data)


def test_a_deep_graph_pickles_without_recursion():
    x = nd.scalar("x")
    y = x
    for _ in range(3000):
        y = nd.sin(y) + 1.0
    f = nd.function([x], y, backend="numpy")
    g = pickle.loads(pickle.dumps(f))
    assert float(g(0.5)) == float(f(0.5))


def test_a_graph_pickles():
    inputs, outputs = mlp_cost()
    graph = nd.function(inputs, outputs, backend="numpy").graph_as_written
    copy = pickle.loads(pickle.dumps(graph))
    assert len(copy.nodes) == len(graph.nodes) and [v.name for v in copy.inputs] == ["x", "W"]


def test_the_compile_status_is_not_pickled_alone():
    x = nd.scalar("x")
    f = nd.function([x], x * 1.0, backend="numpy")
    with pytest.raises(TypeError, match="pickle the Function"):
        pickle.dumps(f.compile_status)


@pytest.mark.slow
def test_a_pickled_compiled_function_compiles_and_answers_in_a_fresh_process(tmp_path):
    inputs, outputs = mlp_cost()
    f = nd.function(inputs, outputs, backend="cpu")
    expected = f(*arguments())
    assert f.wait(WAIT) in ("compiled", UNCHECKED)
    path = tmp_path / "f.pickle"
    path.write_bytes(pickle.dumps(f))
    np.save(tmp_path / "x.npy", arguments()[0])
    np.save(tmp_path / "W.npy", arguments()[1])
    script = textwrap.dedent(
        f"""
        import pickle, sys
        import numpy as np
        f = pickle.loads(open({str(path)!r}, "rb").read())
        status = f.wait({WAIT})
        results = f(np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "W.npy")!r}))
        np.savez({str(tmp_path / "out.npz")!r}, *results)
        print(status, f.status, f.backend, sep="|")
        """
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{UNCHECKED}|compiled|cpu"
    with np.load(tmp_path / "out.npz") as saved:
        got = [saved[f"arr_{i}"] for i in range(len(expected))]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
