"""Numba intrinsics for nbdiff's vectorisable math (``vmath``): bit casts between floats and integers, and a sum's
reassociable add.

- ``f64_to_bits`` / ``bits_to_f64`` and ``f32_to_bits`` / ``bits_to_f32`` reinterpret a float's bits as an integer
  of the same width and back (LLVM's ``bitcast``: no instruction at all in vector code). ``vmath`` reads exponents
  and builds powers of two with them instead of calling libm's ``frexp``/``ldexp``, which would stop LLVM from
  vectorising a loop. ``bits_to_f32`` also takes an int64 (Numba computes on int32 values in int64) and keeps its
  low 32 bits.
- ``muladd(a, b, c)`` is ``a * b + c`` as LLVM's ``llvm.fmuladd``: one fused multiply-add (one rounding) where the
  CPU has FMA instructions, a multiply and an add elsewhere; whatever fast-math flags the caller compiles with.
  The polynomials of ``vmath`` use it (``contract`` would only reach them in callers compiled with that flag).
- ``accumulate(total, value)`` is ``total + value`` as an ``fadd`` with the ``reassoc`` flag only: a loop summing
  with it may keep several partial sums (a vector of them), so a kernel's trailing sum vectorises, while every other
  operation of the kernel keeps IEEE semantics. The sum's value then differs from a sequential sum by rounding,
  like NumPy's pairwise sum does.

This file is read as text by ``nbdiff.backends.vmath`` and copied into the kernel modules that use it (so a module
compiles with Numba and NumPy alone, as its reproducer does); keep every definition self-contained. A typing
function that refuses its arguments falls through (returns None implicitly): the text ``return None`` is the
anchor where test hooks inject faults into a whole-plan entry point, so it must not appear here.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def f64_to_bits(typingctx, x):
    """The bits of a float64 as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    if x == types.float64:
        return types.int64(types.float64), codegen


@intrinsic
def bits_to_f64(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    if x == types.int64:
        return types.float64(types.int64), codegen


@intrinsic
def f32_to_bits(typingctx, x):
    """The bits of a float32 as an int32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    if x == types.float32:
        return types.int32(types.float32), codegen


@intrinsic
def bits_to_f32(typingctx, x):
    """The float32 whose bits are the low 32 bits of the integer ``x`` (int32 or int64)."""

    def codegen(context, builder, signature, args):
        value = args[0]
        if value.type.width != 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    if x in (types.int32, types.int64):
        return types.float32(x), codegen


@intrinsic
def muladd(typingctx, a, b, c):
    """``a * b + c`` (all of one float type), fused where the CPU has FMA instructions (``llvm.fmuladd``)."""

    def codegen(context, builder, signature, args):
        kind = args[0].type
        name = "llvm.fmuladd.f64" if isinstance(kind, ir.DoubleType) else "llvm.fmuladd.f32"
        function = builder.module.globals.get(name)
        if function is None:
            function = ir.Function(builder.module, ir.FunctionType(kind, [kind, kind, kind]), name)
        return builder.call(function, args)

    if a in (types.float32, types.float64) and b == a and c == a:
        return a(a, a, a), codegen


@intrinsic
def accumulate(typingctx, total, value):
    """``total + value`` as an ``fadd reassoc`` (both of one float type): a sum that LLVM may vectorise."""

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc",))

    if total in (types.float32, types.float64) and value == total:
        return total(total, value), codegen
