"""``KernelLibrary``: where CUDA modules are written and imported from, and the small device helpers every kernel
runner shares (allocation, zeroing, data movement by index maps, row sums, launches).

Modules are written with ``nbdiff.backends.cache.write_module`` into the private kernels folder
(``cache.kernels_directory(root)``) and imported with ``cache.import_module_from``, exactly as CPU kernels are:
the same file checks, and numba-cuda's own disk cache (``cache=True``) beside them. Importing this module imports
``numba.cuda``.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
from numba import cuda

from nbdiff.backends.cache import import_module_from, kernels_directory, write_module
from nbdiff.cuda import templates
from nbdiff.cuda.launch import Launch, launch_config, rows_config

DeviceArray = Any  # numba's DeviceNDArray (or the simulator's FakeCUDAArray)


def is_device_array(value: object) -> bool:
    """Whether ``value`` is a CUDA device array (numba's, a CuPy/PyTorch array through the CUDA array interface, or
    the simulator's fake device array)."""
    if isinstance(value, np.ndarray):
        return False
    check = getattr(cuda, "is_cuda_array", None)
    if check is not None:
        return bool(check(value))
    return hasattr(value, "copy_to_host")  # the simulator has no is_cuda_array


def as_device_array(value: object) -> DeviceArray:
    """A device array viewing ``value`` (a foreign CUDA array is wrapped without a copy)."""
    if hasattr(value, "copy_to_host"):
        return value
    return cuda.as_cuda_array(value)


def op_module_name(label: str, source: str) -> str:
    """A module's name from its label and a digest of its text (a changed text never reuses an old module)."""
    return f"nbdiff_cuda_op_{label}_{hashlib.sha1(source.encode()).hexdigest()[:16]}"


class KernelLibrary:
    """Generated CUDA modules, loaded once per name from files in ``kernels_directory(root)``, and the helpers
    kernel runners use. ``uploads`` counts host-to-device copies made for index maps and shape-only values."""

    def __init__(self, root: Path | None = None):
        self.directory = kernels_directory(root)
        self._modules: dict[str, ModuleType] = {}
        self._index_maps: dict[Any, DeviceArray] = {}
        self._error_flags: dict[int, tuple[Any, DeviceArray]] = {}
        self.uploads = 0

    # -- modules -------------------------------------------------------------------------------------------------
    def module(self, name: str, source: str) -> ModuleType:
        """The module ``name`` with text ``source``: written (unless identical) and imported, once."""
        module = self._modules.get(name)
        if module is None:
            path = write_module(self.directory, name, source)
            module = self._modules[name] = import_module_from(path, name)
        return module

    def install(self, name: str, module: ModuleType) -> None:
        """Use ``module`` (loaded by the CUDA target from numba-cuda's disk cache) wherever the module ``name`` is
        asked for: a runner then launches what the compile worker compiled, not a fresh import compiling again."""
        self._modules[name] = module

    def template(self, label: str, source: str) -> ModuleType:
        """The module of a template text (``nbdiff.cuda.templates``), named by ``label`` and its digest."""
        return self.module(op_module_name(label, source), source)

    # -- launches ------------------------------------------------------------------------------------------------
    @staticmethod
    def launch(kernel: Callable, config: Launch, *args: Any) -> None:
        """``kernel[blocks, threads](*args)``."""
        kernel[config.blocks, config.threads](*args)

    # -- memory --------------------------------------------------------------------------------------------------
    def upload(self, array: np.ndarray) -> DeviceArray:
        """A device copy of a host array (counted in ``uploads``)."""
        self.uploads += 1
        return cuda.to_device(c_order(array))

    @staticmethod
    def empty(shape: Sequence[int] | int, dtype: str | np.dtype) -> DeviceArray:
        """An uninitialised C-contiguous device array."""
        return cuda.device_array(shape, np.dtype(dtype))

    def full(self, size: int, dtype: str, value: float) -> DeviceArray:
        """A 1-D device array of ``size`` elements of ``value`` (filled by a kernel: no host copy per call)."""
        out = self.empty(size, dtype)
        key = ("value", dtype, value)
        source = self._index_maps.get(key)
        if source is None:
            source = self._index_maps[key] = self.upload(np.full(1, value, dtype))
        module = self.template(f"helpers_{dtype}", templates.helpers_source(dtype))
        self.launch(module.fill, launch_config(size), size, out, source)
        return out

    def index_map(self, key: Any, build: Callable[[], np.ndarray]) -> DeviceArray:
        """The device copy of the int64 index array ``build()``, built and uploaded once per ``key``."""
        device = self._index_maps.get(key)
        if device is None:
            device = self._index_maps[key] = self.upload(np.asarray(build(), dtype=np.int64).reshape(-1))
        return device

    def constant(self, key: Any, array: np.ndarray) -> DeviceArray:
        """The device copy of a host value computed from shapes only (e.g. a reduced size), uploaded once per
        ``key``."""
        device = self._index_maps.get(("constant", key))
        if device is None:
            device = self._index_maps[("constant", key)] = self.upload(array)
        return device

    def error_flag(self, node: Any) -> DeviceArray:
        """A 1-element int32 device array a kernel of ``node`` sets to 1 on bad input (a class index out of bounds)
        instead of reading out of bounds; ``raised_errors`` reads the flags after a run."""
        entry = self._error_flags.get(id(node))
        if entry is None:
            entry = self._error_flags[id(node)] = (node, self.upload(np.zeros(1, np.int32)))
        return entry[1]

    def raised_errors(self) -> list[Any]:
        """The nodes whose kernels flagged bad input since the last call (their flags are reset)."""
        flagged = []
        for node, flag in self._error_flags.values():
            if flag.copy_to_host()[0]:
                flag.copy_to_device(np.zeros(1, np.int32))
                flagged.append(node)
        return flagged

    def gather(self, source: DeviceArray, index: DeviceArray, shape: tuple[int, ...]) -> DeviceArray:
        """A new C-contiguous array of ``shape``: ``out.flat[i] = source.flat[index[i]]``."""
        size = math.prod(shape)
        out = self.empty(size, source.dtype)
        if size:
            module = self.template(f"helpers_{source.dtype.name}", templates.helpers_source(source.dtype.name))
            self.launch(module.gather, launch_config(size), size, flat(source), index, out)
        return out.reshape(shape) if shape != (size,) else out

    def sum_rows(self, x: DeviceArray, rows: int, cols: int, out_dtype: str) -> DeviceArray:
        """``x`` (``rows * cols`` elements, C order) summed along its rows: a 1-D array of ``rows`` sums."""
        out = self.empty(rows, out_dtype)
        if cols == 0:
            return self.full(rows, out_dtype, 0)
        name = x.dtype.name
        module = self.template(f"sum_rows_{name}_{out_dtype}", templates.sum_rows_source(name, out_dtype))
        self.launch(module.sum_rows, rows_config(rows), rows, cols, flat(x).reshape(rows, cols), out)
        return out


def c_order(array: object) -> np.ndarray:
    """``array`` as a C-contiguous host array of its own shape (``np.ascontiguousarray`` would make a 0-d one 1-d)."""
    array = np.asarray(array)
    return array if array.flags.c_contiguous else np.array(array, order="C")


def flat(array: DeviceArray) -> DeviceArray:
    """A C-contiguous device array as 1-D (a view)."""
    return array if array.ndim == 1 else array.reshape(int(math.prod(array.shape)))
