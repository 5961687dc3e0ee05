"""How a function travels to workers: pickled once, keyed by its pickle's hash, unpickled once per process; and
``nbdiff.dask`` names the extra to install where dask is missing."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np

import nbdiff as nd
from nbdiff.dask import shipping
from tests.dask.workloads import w1_function


def test_a_function_ships_once_and_its_original_answers_where_it_was_shipped():
    f = w1_function("numpy")
    shipped = shipping.ship(f)
    assert shipping.ship(f) is shipped and len(shipped.key) == 64
    assert shipped.function() is f  # the threaded scheduler calls the original: nothing compiles twice here
    copy = pickle.loads(pickle.dumps(shipped))
    assert copy.key == shipped.key and copy.function() is f


def test_a_worker_unpickles_each_function_once(monkeypatch):
    f = w1_function("numpy")
    shipped = shipping.ship(f)
    payload = pickle.dumps(shipped)
    monkeypatch.setattr(shipping, "_ORIGINALS", {})  # as in a worker process: the original is elsewhere
    monkeypatch.setattr(shipping, "_UNPICKLED", {})
    first, second = pickle.loads(payload), pickle.loads(payload)
    g = first.function()
    assert g is not f and second.function() is g
    assert shipping.local_functions() == {shipped.key: g}
    x = np.linspace(-1.0, 1.0, 7)
    value, gradient = first(x)  # a chunk's call: always a list of outputs
    np.testing.assert_array_equal(gradient, f(x)[1])


def test_a_single_output_function_answers_a_list_per_chunk():
    x = nd.vector("x")
    f = nd.function([x], nd.exp(x), backend="numpy")
    assert not f.returns_list and nd.function([x], [nd.exp(x)], backend="numpy").returns_list
    (result,) = shipping.ship(f)(np.zeros(3))
    np.testing.assert_array_equal(result, np.ones(3))


def test_without_dask_the_import_error_names_the_extra():
    code = "import sys; sys.modules['dask'] = None; import nbdiff as nd; nd.dask"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "pip install 'nbdiff[dask]'" in done.stderr
