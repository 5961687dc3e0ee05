"""Matrix products of compiled plans through NumPy's own BLAS, so a process has one BLAS thread pool, not two.

Numba compiles ``np.dot`` to calls into SciPy's BLAS, a second OpenBLAS beside the one NumPy's wheels bundle. Each
keeps its two threads spinning for a while after a call, so a NumPy product followed by an nbdiff one (or the
reverse) runs with four threads on two cores: measured on this project's 2-core machine, W2's MLP step (float32,
mostly matmuls) took 1.97 ms in nbdiff's whole-plan entry point when timed round-robin with NumPy by hand against
0.86 ms alone, and the interpreter (NumPy's BLAS) after it 2.5 ms. The entry point now calls NumPy's ``cblas_?gemm``
itself: the generated module makes NumPy's bundled library visible to Numba's linker by its symbol
(``llvmlite.binding.load_library_permanently``), so the compiled code and Numba's disk cache of it name the function,
never an address of one process, and the products are NumPy's to the bit.

Only ILP64 CBLAS (NumPy's bundled OpenBLAS: ``scipy_cblas_sgemm64_``, or ``cblas_sgemm64_`` in older wheels) is
used; where NumPy has none (a NumPy built on a system BLAS, MKL), ``gemm_symbol`` is None and the entry point keeps
``np.dot``. ``module_lines`` is the text a program module includes: the finder below (copied from this file by
``inspect``, so the module and a reproducer of it need NumPy, Numba and llvmlite only) and an intrinsic per dtype.
"""

from __future__ import annotations

import functools
import inspect

GEMM_LETTERS = {"float32": "s", "float64": "d"}
SYMBOL_FORMS = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")  # ILP64 CBLAS of NumPy's wheels, newest first
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enums


def numpy_blas_library(symbol):
    """The path of the BLAS library bundled with NumPy that exports ``symbol``, or None."""
    import ctypes
    import glob
    import os

    import numpy

    def exports(path):
        try:
            return hasattr(ctypes.CDLL(path), symbol)
        except OSError:
            return False

    package = os.path.dirname(os.path.abspath(numpy.__file__))
    folders = (os.path.join(os.path.dirname(package), "numpy.libs"), os.path.join(package, ".dylibs"))
    paths = [path for folder in folders for path in sorted(glob.glob(os.path.join(folder, "*blas*")))]
    return next((path for path in paths if exports(path)), None)


@functools.cache
def gemm_symbol(dtype: str) -> str | None:
    """The CBLAS gemm of ``dtype`` in NumPy's bundled BLAS (ILP64), or None where there is none."""
    letter = GEMM_LETTERS.get(dtype)
    if letter is None:
        return None
    for form in SYMBOL_FORMS:
        if numpy_blas_library(form.format(letter)) is not None:
            return form.format(letter)
    return None


def gemm_function(dtype: str) -> str:
    """The name of the intrinsic a program module calls for products of ``dtype`` values."""
    return f"numpy_gemm_{GEMM_LETTERS[dtype]}"


def module_lines(dtypes: set[str]) -> list[str]:
    """The module lines that load NumPy's BLAS and define the gemm intrinsic of each of ``dtypes`` (those with a
    ``gemm_symbol``); none for none."""
    if not dtypes:
        return []
    lines = [
        "from llvmlite import binding as llvm_binding",
        "from llvmlite import ir",
        "from numba import types",
        "from numba.extending import intrinsic",
        "",
        "",
        inspect.getsource(numpy_blas_library).rstrip(),
        "",
        "",
        "def load_numpy_blas(symbol):",
        '    """Make NumPy\'s BLAS (the library exporting ``symbol``) visible to Numba\'s linker, which resolves',
        '    the compiled products\' calls by name."""',
        "    path = numpy_blas_library(symbol)",
        "    if path is None:",
        "        raise ImportError(",
        '            f"NumPy\'s bundled BLAS with {symbol} is not found"',
        '            " (NumPy was changed since nbdiff wrote this module)"',
        "        )",
        "    llvm_binding.load_library_permanently(path)",
        "",
        "",
    ]
    for dtype in sorted(dtypes):
        symbol = gemm_symbol(dtype)
        assert symbol is not None, dtype
        real = "ir.FloatType()" if dtype == "float32" else "ir.DoubleType()"
        lines += [
            f'load_numpy_blas("{symbol}")',
            "",
            "",
            "@intrinsic",
            f"def {gemm_function(dtype)}(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):",
            f'    """``c = a @ b`` by ``{symbol}`` (row-major; ``trans_*``: CBLAS\'s 111 or 112; a, b, c: data',
            '    addresses; sizes and leading dimensions: int64)."""',
            "",
            "    def codegen(context, builder, signature, args):",
            "        trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc = args",
            f"        i32, i64, real = ir.IntType(32), ir.IntType(64), {real}",
            "        pointer = real.as_pointer()",
            "        kinds = [i32, i32, i32, i64, i64, i64, real, pointer, i64, pointer, i64, real, pointer, i64]",
            f'        function = builder.module.globals.get("{symbol}")',
            "        if function is None:",
            f'            function = ir.Function(builder.module, ir.FunctionType(ir.VoidType(), kinds), "{symbol}")',
            f"        enum = [ir.Constant(i32, {ROW_MAJOR}), builder.trunc(trans_a, i32), builder.trunc(trans_b, i32)]",
            "        sizes = [builder.sext(v, i64) if v.type.width < 64 else v for v in (m, n, k, lda, ldb, ldc)]",
            "        m, n, k, lda, ldb, ldc = sizes",
            "        one, zero = ir.Constant(real, 1.0), ir.Constant(real, 0.0)",
            "        a, b, c = (builder.inttoptr(v, pointer) for v in (a, b, c))",
            "        builder.call(function, [*enum, m, n, k, one, a, lda, b, ldb, zero, c, ldc])",
            "        return context.get_dummy_value()",
            "",
            "    arguments = (trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)",
            "    if all(isinstance(t, types.Integer) for t in arguments):",
            "        return types.void(*arguments), codegen",
            "",
            "",
        ]
    return lines


def gemm_call(dtype: str, a: tuple[str, int, str], b: tuple[str, int, str], target: str) -> str:
    """The entry's line computing ``target = a @ b`` through ``gemm_function(dtype)``; ``a`` and ``b`` are (name in
    the code, ndim, layout "C" or "F"). A 1-d ``a`` is a row (1, K), a 1-d ``b`` a column (K, 1); an F-layout
    matrix is the transpose of the C array under it."""
    x, x_ndim, x_layout = a
    y, y_ndim, y_layout = b
    if x_ndim == 1:
        m, k, trans_a, lda = "1", f"{x}.shape[0]", NO_TRANS, f"{x}.shape[0]"
    else:
        m, k = f"{x}.shape[0]", f"{x}.shape[1]"
        trans_a, lda = (NO_TRANS, f"{x}.shape[1]") if x_layout == "C" else (TRANS, f"{x}.shape[0]")
    if y_ndim == 1:
        n, trans_b, ldb = "1", NO_TRANS, "1"
    else:
        n = f"{y}.shape[1]"
        trans_b, ldb = (NO_TRANS, f"{y}.shape[1]") if y_layout == "C" else (TRANS, f"{y}.shape[0]")
    arguments = [
        str(trans_a), str(trans_b), m, n, k,
        f"{x}.ctypes.data", lda, f"{y}.ctypes.data", ldb, f"{target}.ctypes.data", n,
    ]  # fmt: skip
    return f"    {gemm_function(dtype)}({', '.join(arguments)})"
