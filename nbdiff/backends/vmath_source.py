"""The vectorisable math functions compiled CPU kernels call (``math="nbdiff"``): float64 and float32 versions.

Every function is branch-free straight-line code (conditional expressions that LLVM turns into selects),
polynomials with range reduction, and bit manipulation through ``nbdiff.backends.bits``: no libm call, so LLVM
vectorises a kernel's loop around them. Algorithms (written here, in the style of Cephes, fdlibm and SLEEF):

- ``exp``: ``x = q ln2 + r`` (Cody-Waite, ``q`` rounded with the 1.5 * 2**52 trick so it is also an integer in the
  low bits), ``exp(r)`` by its Taylor polynomial on ``|r| <= ln2/2``, times ``2**q`` built from bits in two factors
  (so overflow to inf and gradual underflow into subnormals come out as IEEE rounding gives them).
- ``expm1``: the same reduction and ``expm1(r)`` by its Taylor polynomial without the constant term; then
  ``2**q expm1(r) + (2**q - 1)`` (exact for small ``q``) or ``2**q (expm1(r) + 1) - 1`` for ``q > 60``.
- ``log``: ``x = 2**k m`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` from the bits (subnormals scaled by ``2**54``
  first); ``log(m) = 2 atanh(s)``, ``s = f / (2 + f)``, ``f = m - 1``, with fdlibm's minimax coefficients and its
  ``f - hfsq + s (hfsq + R)`` arrangement (float32: musl's four-term minimax).
- ``log1p``: ``log(u) + c`` with ``u = 1 + x`` and ``c = (x - (u - 1)) / u`` the rounding error of ``u``.
- ``tanh``: ``t / (t + 2)`` with ``t = expm1(2 |x|)`` (``|x|`` capped where tanh rounds to 1), sign copied.
- ``sigmoid``: ``1 / (1 + e)`` or ``e / (1 + e)`` with ``e = exp(-|x|)``, by the sign of ``x``.
- ``softplus``: ``max(x, 0) + log1p(exp(-|x|))``.
- ``sin``, ``cos``: ``x = q pi/2 + r`` in float64 with pi/2 in four pieces (three of 27 bits, so ``q * piece`` is
  exact for ``|q| < 2**26``, i.e. ``|x|`` up to 1.05e8: the documented range; beyond it they return NaN rather
  than a wrong number, so the agreement check sends such a function to the interpreter; ``math="libm"`` computes
  them), Taylor polynomials of sin and cos on ``|r| <= pi/4``, chosen and signed by ``q mod 4``. The float32
  versions reduce in float64 too (exact for float32 inputs in that range) and evaluate float32 polynomials.
- ``erf`` is generated from the Chebyshev pieces of ``nbdiff.ops.special`` (``vmath.erf_source``).

Special values follow NumPy: NaN in gives NaN; ``+-inf`` and ``+-0`` give NumPy's results (the sign of zero kept
where NumPy keeps it); results overflow to inf and underflow through the subnormals to 0 where NumPy's do.

The float32 versions compute in float32 with fewer polynomial terms (that is what makes float32 kernels twice as
wide as float64 ones), except the range reduction of sin and cos. Every literal is typed (``np.float32(...)``): an
untyped literal would promote a float32 computation to float64.

This file is read as text by ``nbdiff.backends.vmath`` and the functions a kernel uses are copied into its module
(with the decorators as written): keep each function self-contained, calling only ``bits`` intrinsics, ``math``,
``np`` and other functions of this file. Multiply-adds of the polynomials and reductions go through
``bits.muladd`` (one FMA where the CPU has it), so a function computes the same values however it is compiled:
apart (LLVM's inliner then copies it, with its own IEEE semantics, into the caller's loop) or inlined into the
caller's Numba IR (``inline="always"``: softplus and erf, which LLVM's inliner declines, leaving calls that stop
vectorisation; the code then takes the caller's flags, none in a kernel without ``fastmath``, and
``vmath.definitions(inline=False)`` drops it for kernels with them). ``fastmath=False`` is explicit: a Numba function
that leaves it unset inherits its caller's fast-math flags, and ``reassoc`` breaks these functions.
"""

import math

import numba
import numpy as np

from nbdiff.backends.bits import bits_to_f32, bits_to_f64, f32_to_bits, f64_to_bits, muladd


# ---------------------------------------------------------------------------------------------------------------
# Powers of two and rounding to an integer, from bits
# ---------------------------------------------------------------------------------------------------------------
@numba.njit(fastmath=False, error_model="numpy")
def vm_round_f64(y):
    """``(q, qi)``: ``y`` rounded to the nearest integer as a float64 and as an int64 (``|y| < 2**51``)."""
    shifted = y + 6755399441055744.0  # 1.5 * 2**52: the integer lands in the low bits of the mantissa
    return shifted - 6755399441055744.0, f64_to_bits(shifted) - 0x4338000000000000


@numba.njit(fastmath=False, error_model="numpy")
def vm_scale_f64(p, n):
    """``p * 2**n`` for an int64 ``|n| <= 2000``, in two exact power-of-two factors (overflow and underflow as IEEE
    rounding of the exact product gives them)."""
    half = n >> 1
    first = bits_to_f64((half + 1023) << 52)
    second = bits_to_f64((n - half + 1023) << 52)
    return p * first * second


@numba.njit(fastmath=False, error_model="numpy")
def vm_round_f32(y):
    """``(q, qi)``: ``y`` rounded to the nearest integer as a float32 and as an int32 (``|y| < 2**22``)."""
    shifted = y + np.float32(12582912.0)  # 1.5 * 2**23
    return shifted - np.float32(12582912.0), f32_to_bits(shifted) - np.int32(0x4B400000)


@numba.njit(fastmath=False, error_model="numpy")
def vm_scale_f32(p, n):
    """``p * 2**n`` for an integer ``|n| <= 250``, in two exact power-of-two factors."""
    half = n >> 1
    first = bits_to_f32((half + 127) << 23)
    second = bits_to_f32((n - half + 127) << 23)
    return p * first * second


# ---------------------------------------------------------------------------------------------------------------
# exp, expm1
# ---------------------------------------------------------------------------------------------------------------
@numba.njit(fastmath=False, error_model="numpy")
def vm_exp_reduce_f64(x):
    """``(r, qi)`` with ``x = qi ln2 + r``, ``|r| <= ln2/2`` (``x`` within the clamps of the callers)."""
    q, qi = vm_round_f64(x * 1.4426950408889634)
    r = muladd(q, -0.6931471803691238, x)  # ln2's leading 32 bits: q * it is exact
    r = muladd(q, -1.9082149292705877e-10, r)
    return r, qi


@numba.njit(fastmath=False, error_model="numpy")
def vm_expm1_poly_f64(r):
    """``expm1(r)`` for ``|r| <= ln2/2``: Taylor to degree 13."""
    p = 1.0 / 6227020800.0
    p = muladd(p, r, 1.0 / 479001600.0)
    p = muladd(p, r, 1.0 / 39916800.0)
    p = muladd(p, r, 1.0 / 3628800.0)
    p = muladd(p, r, 1.0 / 362880.0)
    p = muladd(p, r, 1.0 / 40320.0)
    p = muladd(p, r, 1.0 / 5040.0)
    p = muladd(p, r, 1.0 / 720.0)
    p = muladd(p, r, 1.0 / 120.0)
    p = muladd(p, r, 1.0 / 24.0)
    p = muladd(p, r, 1.0 / 6.0)
    p = muladd(p, r, 0.5)
    return r + (r * r) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_exp_f64(x):
    """exp(x), float64."""
    c = 720.0 if x > 720.0 else x  # NaN stays NaN through the clamps
    c = -760.0 if c < -760.0 else c
    r, qi = vm_exp_reduce_f64(c)
    return vm_scale_f64(1.0 + vm_expm1_poly_f64(r), qi)


@numba.njit(fastmath=False, error_model="numpy")
def vm_expm1_f64(x):
    """expm1(x), float64."""
    c = 720.0 if x > 720.0 else x
    c = -45.0 if c < -45.0 else c  # expm1 rounds to -1 below about -38
    r, qi = vm_exp_reduce_f64(c)
    p = vm_expm1_poly_f64(r)
    small = 60 if qi > 60 else qi
    s = bits_to_f64((small + 1023) << 52)
    near = p * s + (s - 1.0)
    far = vm_scale_f64(p + 1.0, qi) - 1.0
    result = far if qi > 60 else near
    return x if x == 0.0 else result


@numba.njit(fastmath=False, error_model="numpy")
def vm_exp_reduce_f32(x):
    """``(r, qi)`` with ``x = qi ln2 + r``, ``|r| <= ln2/2``, in float32."""
    q, qi = vm_round_f32(x * np.float32(1.4426950408889634))
    r = muladd(q, -np.float32(0.693359375), x)  # 355/512: q * it is exact
    r = muladd(q, np.float32(2.1219444005469057e-04), r)
    return r, qi


@numba.njit(fastmath=False, error_model="numpy")
def vm_expm1_poly_f32(r):
    """``expm1(r)`` for ``|r| <= ln2/2``: Taylor to degree 7, float32."""
    p = np.float32(1.0 / 5040.0)
    p = muladd(p, r, np.float32(1.0 / 720.0))
    p = muladd(p, r, np.float32(1.0 / 120.0))
    p = muladd(p, r, np.float32(1.0 / 24.0))
    p = muladd(p, r, np.float32(1.0 / 6.0))
    p = muladd(p, r, np.float32(0.5))
    return r + (r * r) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_exp_f32(x):
    """exp(x), float32."""
    c = np.float32(89.0) if x > np.float32(89.0) else x
    c = np.float32(-104.0) if c < np.float32(-104.0) else c
    r, qi = vm_exp_reduce_f32(c)
    return vm_scale_f32(np.float32(1.0) + vm_expm1_poly_f32(r), qi)


@numba.njit(fastmath=False, error_model="numpy")
def vm_expm1_f32(x):
    """expm1(x), float32."""
    c = np.float32(89.0) if x > np.float32(89.0) else x
    c = np.float32(-20.0) if c < np.float32(-20.0) else c  # expm1 rounds to -1 below about -17
    r, qi = vm_exp_reduce_f32(c)
    p = vm_expm1_poly_f32(r)
    small = 25 if qi > 25 else qi
    s = bits_to_f32((small + 127) << 23)
    near = p * s + (s - np.float32(1.0))
    far = vm_scale_f32(p + np.float32(1.0), qi) - np.float32(1.0)
    result = far if qi > 25 else near
    return x if x == np.float32(0.0) else result


# ---------------------------------------------------------------------------------------------------------------
# log, log1p
# ---------------------------------------------------------------------------------------------------------------
@numba.njit(fastmath=False, error_model="numpy")
def vm_log_f64(x):
    """log(x), float64."""
    tiny = x < 2.2250738585072014e-308  # subnormals (and zero, negatives: replaced below) are scaled by 2**54
    scaled = x * 18014398509481984.0 if tiny else x
    offset = 54.0 if tiny else 0.0
    ix = f64_to_bits(scaled) - 0x3FE6A09E667F3BCD  # the bits of sqrt(1/2): m lands in [sqrt(1/2), sqrt(2))
    k = ix >> 52
    m = bits_to_f64((ix & 0x000FFFFFFFFFFFFF) + 0x3FE6A09E667F3BCD)
    kd = bits_to_f64(k + 0x4338000000000000) - 6755399441055744.0 - offset  # k as a float without a conversion
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01))
    t2 = z * (
        6.666666666666735130e-01
        + w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01))
    )
    big_r = t1 + t2
    result = kd * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + big_r) + kd * 1.90821492927058770002e-10)) - f)
    result = -math.inf if x == 0.0 else result
    result = math.nan if x < 0.0 else result
    return x if not x < math.inf else result  # +inf and NaN


@numba.njit(fastmath=False, error_model="numpy")
def vm_log1p_f64(x):
    """log1p(x), float64."""
    u = 1.0 + x
    c = (x - (u - 1.0)) / u
    c = c if (u > 0.0) & (u < 9007199254740992.0) else 0.0
    result = vm_log_f64(u) + c
    return x if x == 0.0 else result


@numba.njit(fastmath=False, error_model="numpy")
def vm_log_f32(x):
    """log(x), float32."""
    tiny = x < np.float32(1.1754943508222875e-38)
    scaled = x * np.float32(33554432.0) if tiny else x  # 2**25
    offset = np.float32(25.0) if tiny else np.float32(0.0)
    ix = f32_to_bits(scaled) - np.int32(0x3F3504F3)  # the bits of sqrt(1/2) in float32
    k = ix >> 23
    m = bits_to_f32((ix & 0x007FFFFF) + 0x3F3504F3)
    kd = np.float32(k) - offset
    f = m - np.float32(1.0)
    hfsq = np.float32(0.5) * f * f
    s = f / (np.float32(2.0) + f)
    z = s * s
    w = z * z
    t1 = w * (np.float32(13422099.0 / 33554432.0) + w * np.float32(16293414.0 / 67108864.0))
    t2 = z * (np.float32(11184810.0 / 16777216.0) + w * np.float32(9562606.0 / 33554432.0))
    big_r = t1 + t2
    result = (s * (hfsq + big_r) + kd * np.float32(9.0580006145e-06)) - hfsq + f + kd * np.float32(6.9313812256e-01)
    result = np.float32(-math.inf) if x == np.float32(0.0) else result
    result = np.float32(math.nan) if x < np.float32(0.0) else result
    return x if not x < np.float32(math.inf) else result


@numba.njit(fastmath=False, error_model="numpy")
def vm_log1p_f32(x):
    """log1p(x), float32."""
    u = np.float32(1.0) + x
    c = (x - (u - np.float32(1.0))) / u
    c = c if (u > np.float32(0.0)) & (u < np.float32(16777216.0)) else np.float32(0.0)
    result = vm_log_f32(u) + c
    return x if x == np.float32(0.0) else result


# ---------------------------------------------------------------------------------------------------------------
# tanh, sigmoid, softplus
# ---------------------------------------------------------------------------------------------------------------
@numba.njit(fastmath=False, error_model="numpy")
def vm_tanh_f64(x):
    """tanh(x), float64."""
    a = abs(x)
    a = 20.0 if a > 20.0 else a  # tanh(20) rounds to 1
    t = vm_expm1_f64(a + a)
    return math.copysign(t / (t + 2.0), x)


@numba.njit(fastmath=False, error_model="numpy")
def vm_tanh_f32(x):
    """tanh(x), float32."""
    a = abs(x)
    a = np.float32(10.0) if a > np.float32(10.0) else a
    t = vm_expm1_f32(a + a)
    return math.copysign(t / (t + np.float32(2.0)), x)


@numba.njit(fastmath=False, error_model="numpy")
def vm_sigmoid_f64(x):
    """1 / (1 + exp(-x)), float64."""
    e = vm_exp_f64(-abs(x))
    r = 1.0 / (1.0 + e)
    return r if x >= 0.0 else e * r


@numba.njit(fastmath=False, error_model="numpy")
def vm_sigmoid_f32(x):
    """1 / (1 + exp(-x)), float32."""
    e = vm_exp_f32(-abs(x))
    r = np.float32(1.0) / (np.float32(1.0) + e)
    return r if x >= np.float32(0.0) else e * r


@numba.njit(fastmath=False, error_model="numpy", inline="always")
def vm_softplus_f64(x):
    """log(1 + exp(x)), float64."""
    return (x if x > 0.0 else 0.0) + vm_log1p_f64(vm_exp_f64(-abs(x)))


@numba.njit(fastmath=False, error_model="numpy", inline="always")
def vm_softplus_f32(x):
    """log(1 + exp(x)), float32."""
    return (x if x > np.float32(0.0) else np.float32(0.0)) + vm_log1p_f32(vm_exp_f32(-abs(x)))


# ---------------------------------------------------------------------------------------------------------------
# sin, cos
# ---------------------------------------------------------------------------------------------------------------
@numba.njit(fastmath=False, error_model="numpy")
def vm_reduce_pio2(x):
    """``(r, qi)`` with ``x = qi pi/2 + r``, ``|r| <= pi/4`` (float64; exact reduction for ``|x| <= 1.05e8``)."""
    q, qi = vm_round_f64(x * 0.6366197723675814)
    r = muladd(q, -1.570796325802803, x)  # pi/2 in three 27-bit pieces and a rest: q * piece is exact for |q| < 2**26
    r = muladd(q, -9.920935739593517e-10, r)
    r = muladd(q, -5.721188709663575e-18, r)
    r = muladd(q, -1.6446256936324258e-26, r)
    return r, qi


@numba.njit(fastmath=False, error_model="numpy")
def vm_sin_poly_f64(r):
    """sin(r) for ``|r| <= pi/4``: Taylor to degree 17."""
    z = r * r
    p = 1.0 / 355687428096000.0
    p = muladd(p, z, -(1.0 / 1307674368000.0))
    p = muladd(p, z, 1.0 / 6227020800.0)
    p = muladd(p, z, -(1.0 / 39916800.0))
    p = muladd(p, z, 1.0 / 362880.0)
    p = muladd(p, z, -(1.0 / 5040.0))
    p = muladd(p, z, 1.0 / 120.0)
    p = muladd(p, z, -(1.0 / 6.0))
    return r + (r * z) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_cos_poly_f64(r):
    """cos(r) for ``|r| <= pi/4``: Taylor to degree 18."""
    z = r * r
    p = -1.0 / 6402373705728000.0
    p = muladd(p, z, 1.0 / 20922789888000.0)
    p = muladd(p, z, -(1.0 / 87178291200.0))
    p = muladd(p, z, 1.0 / 479001600.0)
    p = muladd(p, z, -(1.0 / 3628800.0))
    p = muladd(p, z, 1.0 / 40320.0)
    p = muladd(p, z, -(1.0 / 720.0))
    p = muladd(p, z, 1.0 / 24.0)
    return (1.0 - 0.5 * z) + (z * z) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_sin_f64(x):
    """sin(x), float64 (accurate for ``|x| <= 1.05e8``)."""
    r, qi = vm_reduce_pio2(x)
    s = vm_sin_poly_f64(r)
    c = vm_cos_poly_f64(r)
    v = c if qi & 1 else s
    v = -v if qi & 2 else v
    v = math.nan if abs(x) > 1.05e8 else v  # beyond the exact reduction: NaN, never a wrong number
    return x if x == 0.0 else v


@numba.njit(fastmath=False, error_model="numpy")
def vm_cos_f64(x):
    """cos(x), float64 (accurate for ``|x| <= 1.05e8``)."""
    r, qi = vm_reduce_pio2(x)
    s = vm_sin_poly_f64(r)
    c = vm_cos_poly_f64(r)
    v = s if qi & 1 else c
    v = -v if (qi + 1) & 2 else v
    return math.nan if abs(x) > 1.05e8 else v  # beyond the exact reduction: NaN, never a wrong number


@numba.njit(fastmath=False, error_model="numpy")
def vm_sin_poly_f32(r):
    """sin(r) for ``|r| <= pi/4``: Taylor to degree 9, float32."""
    z = r * r
    p = np.float32(1.0 / 362880.0)
    p = muladd(p, z, -np.float32(1.0 / 5040.0))
    p = muladd(p, z, np.float32(1.0 / 120.0))
    p = muladd(p, z, -np.float32(1.0 / 6.0))
    return r + (r * z) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_cos_poly_f32(r):
    """cos(r) for ``|r| <= pi/4``: Taylor to degree 10, float32."""
    z = r * r
    p = np.float32(-1.0 / 3628800.0)
    p = muladd(p, z, np.float32(1.0 / 40320.0))
    p = muladd(p, z, -np.float32(1.0 / 720.0))
    p = muladd(p, z, np.float32(1.0 / 24.0))
    return (np.float32(1.0) - np.float32(0.5) * z) + (z * z) * p


@numba.njit(fastmath=False, error_model="numpy")
def vm_sin_f32(x):
    """sin(x), float32 (reduced in float64; accurate for ``|x| <= 1.05e8``)."""
    rd, qi = vm_reduce_pio2(np.float64(x))
    r = np.float32(rd)
    s = vm_sin_poly_f32(r)
    c = vm_cos_poly_f32(r)
    v = c if qi & 1 else s
    v = -v if qi & 2 else v
    v = np.float32(math.nan) if abs(x) > np.float32(1.05e8) else v
    return x if x == np.float32(0.0) else v


@numba.njit(fastmath=False, error_model="numpy")
def vm_cos_f32(x):
    """cos(x), float32 (reduced in float64; accurate for ``|x| <= 1.05e8``)."""
    rd, qi = vm_reduce_pio2(np.float64(x))
    r = np.float32(rd)
    s = vm_sin_poly_f32(r)
    c = vm_cos_poly_f32(r)
    v = s if qi & 1 else c
    v = -v if (qi + 1) & 2 else v
    return np.float32(math.nan) if abs(x) > np.float32(1.05e8) else v
