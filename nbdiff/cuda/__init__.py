"""The CUDA target: fused kernels and op kernels as ``numba.cuda.jit`` modules, run on a device-resident plan.

- ``source``: the module text of a fused kernel (grid-stride loop around the target-neutral scalar body of
  ``nbdiff.backends.codegen``, block reductions for trailing sums) and the argument preparation on the device.
- ``launch``: the launch configuration by size (``launch_config``), with ``grid_limits`` for tiny test grids.
- ``op_kernels``: CUDA kernels of non-elementwise ops (matmul, row-wise softmax family, the cross-entropy pair,
  sums over axes, data movement), registered per op class.
- ``device_plan``: ``DevicePlan`` runs a rewritten graph with its values on the device.

Nothing here imports ``numba.cuda`` at ``import nbdiff``: ``cuda_problem()`` imports it on first call (about half a
second), and only the generated modules and the plan use it.
"""

from __future__ import annotations

import functools

import numpy as np


def _numpy_aliases_for_numba_cuda() -> None:
    """numba-cuda 0.30 registers an overload for ``np.row_stack`` when its array typing loads (at a kernel's first
    compile); NumPy 2.5 removed that alias of ``np.vstack``, so every CUDA compile failed with AttributeError (seen
    on a real GPU: numba-cuda 0.30.4, numpy 2.5.2). Restoring the alias, the same function, lets it load."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack  # type: ignore[attr-defined]


_numpy_aliases_for_numba_cuda()


@functools.lru_cache(maxsize=1)
def cuda_problem() -> str | None:
    """Why the CUDA target cannot run in this process (None when it can): numba-cuda or its CUDA bindings are not
    installed, or no GPU and driver are usable (``cuda.is_available()``). Under the simulator
    (``NUMBA_ENABLE_CUDASIM=1``) the simulated device counts as available. Remembered: detection costs ~0.5 s."""
    try:
        from numba import cuda
    except ImportError as exc:
        return f"numba-cuda is not installed (pip install 'nbdiff[cuda]'): {exc}"
    if getattr(cuda, "implementation", "NVIDIA") != "NVIDIA" and not simulated():
        return "numba's legacy built-in CUDA package is loaded, not numba-cuda (pip install 'nbdiff[cuda]')"
    try:
        available = cuda.is_available()
    except Exception as exc:  # a broken driver install raises instead of answering False
        return f"the CUDA driver failed to initialise: {exc}"
    if not available:
        return "no CUDA GPU or driver is usable here (numba.cuda.is_available() is False)"
    return None


def simulated() -> bool:
    """Whether ``numba.cuda`` is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` when numba was imported)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


__all__ = ["cuda_problem", "simulated"]
