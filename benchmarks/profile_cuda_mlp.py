"""Where the CUDA target's time goes in the MLP step of bench_cuda.py: each step of its ``DevicePlan`` timed alone
(synchronised before and after, so the total is larger than an unsynchronised run), the 15 slowest printed.

Run on a GPU: ``python benchmarks/profile_cuda_mlp.py`` (env: BATCH=4096, N_IN=784, HIDDEN=256, REPS=5). Under
``NUMBA_ENABLE_CUDASIM=1`` it runs on tiny grids (use N_IN=9 HIDDEN=5 BATCH=6 REPS=1: the figures mean nothing).
"""

import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_interpreter import mlp_args, mlp_outputs  # noqa: E402
from numba import cuda  # noqa: E402

import nbdiff as nd  # noqa: E402
from nbdiff.cuda.device_plan import DevicePlan  # noqa: E402
from nbdiff.cuda.launch import grid_limits  # noqa: E402
from nbdiff.cuda.library import KernelLibrary  # noqa: E402

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    grid_limits(32, 2).__enter__()

batch = int(os.environ.get("BATCH", "4096"))
args = mlp_args(
    np.random.default_rng(2), batch, int(os.environ.get("N_IN", "784")), int(os.environ.get("HIDDEN", "256")), 10
)
inputs, outputs = mlp_outputs()
f = nd.function(inputs, outputs, backend="numpy")
plan = DevicePlan(f.graph, library=KernelLibrary(Path(tempfile.mkdtemp())))
dargs = [cuda.to_device(a) for a in args]
plan.run(dargs, device_outputs=True)
cuda.synchronize()
times = defaultdict(float)
nodes = {}
original = plan._run_step


def timed(node, a):
    cuda.synchronize()
    t = time.perf_counter()
    r = original(node, a)
    cuda.synchronize()
    times[id(node)] += time.perf_counter() - t
    nodes[id(node)] = node
    return r


plan._run_step = timed
plan.stats.reset()
reps = int(os.environ.get("REPS", "5"))
t0 = time.perf_counter()
for _ in range(reps):
    plan.run(dargs, device_outputs=True)
cuda.synchronize()
print(f"per run {1e3 * (time.perf_counter() - t0) / reps:.2f} ms; stats per {reps} runs: {plan.stats}")
for key, t in sorted(times.items(), key=lambda kv: -kv[1])[:15]:
    node = nodes[key]
    shapes = [tuple(v.type.shape) for v in node.inputs]
    print(f"{1e3 * t / reps:8.3f} ms  {node.op.name:30s} on host={plan._runner(node) is None}  {shapes}")
