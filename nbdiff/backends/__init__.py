"""Compile targets and what they share.

- ``compilation``: target-neutral. The compile stages every target runs (plan units, write modules into the cache,
  load or send to the worker, events, the runner handed to ``CompileStatus``), ``CompiledPlan`` and its agreement
  check per kernel and variant, with reproducers.
- ``codegen``: target-neutral. From a ``FusedElemwise`` op to the scalar body of its loop (one typed assignment
  per member), and the run-time layout a flat-loop kernel needs (``supports``, ``kernel_layout``).
- ``cache`` (module files, markers, reproducers), ``worker`` (the compile process), ``agreement`` (tolerances).
- ``vmath`` (with ``vmath_source`` and ``bits``): nbdiff's vectorisable math, which CPU kernels call under
  ``math="nbdiff"`` so LLVM vectorises their loops, from one library module per cache folder (``vmath_library``).
- The CPU target: ``cpu`` (``CpuTarget``, its runners), ``cpu_source`` (the Numba CPU module text around the
  scalar body), ``entry_source`` (a whole function of scalars), ``cpu_ops`` (kernels of ops that are not
  elementwise, per op class), ``numba_loading`` (loading from Numba's cache).

Nothing here imports Numba at import time: only the generated modules and the worker do, so ``import nbdiff``
stays light. ``nbdiff.runtime.targets`` maps target names to these classes and imports them on demand.
"""
