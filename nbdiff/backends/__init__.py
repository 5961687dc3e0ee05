"""Compiled backends for fused kernels.

- ``codegen``: target-neutral. From a ``FusedElemwise`` op to the scalar body of its loop (one typed assignment
  per member), and the run-time layout a flat-loop kernel needs (``supports``, ``kernel_layout``).
- ``cpu_source``: the Numba CPU module text around that body, and ``run_compiled``, which calls a compiled module
  with the interpreter's dtypes and shapes.

Nothing here imports Numba: only the generated modules do, so ``import nbdiff`` stays light.
"""
