"""``nd.check_grads``: symbolic derivatives against central finite differences, in float64.

Checks run in a random direction (one FD evaluation pair per check, whatever the input size), in reverse mode
(``Lop``) and forward mode (``Rop``), and recursively on the derivative graphs for higher orders. A failure names
the mode, the order, the input, the worst element's position, both values, the errors and the tolerances.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from nbdiff.errors import NbdiffError
from nbdiff.function import function
from nbdiff.gradient import Lop, Rop
from nbdiff.graph.basic import Variable, constant
from nbdiff.graph.types import is_float
from nbdiff.variables import tensor

GraphBuilder = Callable[..., Any]


class GradientCheckError(NbdiffError, AssertionError):
    """Symbolic and numerical derivatives disagree (raised by ``check_grads``)."""


def check_grads(
    f: GraphBuilder,
    args: Sequence[Any],
    order: int = 2,
    modes: Sequence[str] = ("rev", "fwd"),
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    static_shapes: bool = False,
) -> None:
    """Check the derivatives of ``f`` (a function building a graph from variables) at ``args`` up to ``order``.

    Float arguments are differentiated (in float64); integer and boolean arguments are passed through as inputs of
    their own dtype. ``modes`` picks reverse (``"rev"``, via ``Lop``) and/or forward (``"fwd"``, via ``Rop``).
    Inputs get unknown dimensions unless ``static_shapes`` is set, so run-time broadcasting paths are exercised.
    Raises ``GradientCheckError`` on the first disagreement.
    """
    arrays = [np.asarray(a, dtype="float64") if np.asarray(a).dtype.kind == "f" else np.asarray(a) for a in args]
    for mode in modes:
        if mode not in ("rev", "fwd"):
            raise ValueError(f"check_grads: modes must be 'rev' and/or 'fwd', got {mode!r}")
    checker = _Checker(arrays, eps, atol, rtol, np.random.default_rng(seed), static_shapes)
    checker.check(_as_outputs(f), order, modes, trail="")


def _as_outputs(f: GraphBuilder) -> Callable[..., list[Variable]]:
    def build(*variables: Variable) -> list[Variable]:
        out = f(*variables)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return build


class _Checker:
    def __init__(self, arrays, eps, atol, rtol, rng, static_shapes):
        self.arrays = arrays
        self.eps = eps
        self.atol = atol
        self.rtol = rtol
        self.rng = rng
        self.static_shapes = static_shapes
        self.float_positions = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
        if not self.float_positions:
            raise ValueError("check_grads: no float argument to differentiate")

    def variables(self) -> list[Variable]:
        return [
            tensor(f"arg{i}", dtype=a.dtype.name, shape=a.shape if self.static_shapes else (None,) * a.ndim)
            for i, a in enumerate(self.arrays)
        ]

    def evaluate(self, build, arrays) -> list[np.ndarray]:
        variables = self.variables()
        return [np.asarray(v, dtype="float64") for v in function(variables, build(*variables))(*arrays)]

    def shifted(self, directions, scale) -> list[np.ndarray]:
        result = list(self.arrays)
        for position, direction in zip(self.float_positions, directions):
            result[position] = self.arrays[position] + scale * direction
        return result

    def check(self, build, order: int, modes: Sequence[str], trail: str) -> None:
        outputs = self.evaluate(build, self.arrays)
        directions = [self.rng.standard_normal(self.arrays[p].shape) for p in self.float_positions]
        plus = self.evaluate(build, self.shifted(directions, self.eps))
        minus = self.evaluate(build, self.shifted(directions, -self.eps))
        numeric_jvp = [(p - m) / (2 * self.eps) for p, m in zip(plus, minus)]
        float_outputs = [i for i, o in enumerate(outputs) if o.dtype.kind == "f"]
        if "fwd" in modes:
            self.check_forward(build, directions, numeric_jvp, trail)
            if order > 1:
                self.check(self.forward_builder(build, directions), order - 1, modes, trail + "fwd/")
        if "rev" in modes:
            cotangents = [self.rng.standard_normal(outputs[i].shape) for i in float_outputs]
            self.check_reverse(build, cotangents, float_outputs, directions, numeric_jvp, trail)
            if order > 1:
                self.check(self.reverse_builder(build, cotangents, float_outputs), order - 1, modes, trail + "rev/")

    # -- forward mode --------------------------------------------------------------------------------------------
    def forward_builder(self, build, directions):
        positions = self.float_positions

        def jvp(*variables):
            outputs = build(*variables)
            wrt = [variables[p] for p in positions]
            tangents = [constant(d) for d in directions]
            return [Rop(o, wrt, tangents) for o in outputs if is_float(o.dtype)]

        return jvp

    def check_forward(self, build, directions, numeric_jvp, trail) -> None:
        symbolic = self.evaluate(self.forward_builder(build, directions), self.arrays)
        float_numeric = [n for n, o in zip(numeric_jvp, build(*self.variables())) if is_float(o.dtype)]
        for index, (sym, num) in enumerate(zip(symbolic, float_numeric)):
            self.compare(sym, num, f"forward mode (Rop), {trail}order 1, output {index}")

    # -- reverse mode --------------------------------------------------------------------------------------------
    def reverse_builder(self, build, cotangents, float_outputs):
        positions = self.float_positions

        def vjp(*variables):
            outputs = [build(*variables)[i] for i in float_outputs]
            wrt = [variables[p] for p in positions]
            return Lop(outputs, wrt, [constant(c) for c in cotangents], disconnected="zero")

        return vjp

    def check_reverse(self, build, cotangents, float_outputs, directions, numeric_jvp, trail) -> None:
        grads = self.evaluate(self.reverse_builder(build, cotangents, float_outputs), self.arrays)
        symbolic = float(sum(np.sum(g * d) for g, d in zip(grads, directions)))
        numeric = float(sum(np.sum(numeric_jvp[i] * c) for i, c in zip(float_outputs, cotangents)))
        if self.close(symbolic, numeric):
            return
        where = self.locate_reverse(build, cotangents, float_outputs, grads)
        raise GradientCheckError(
            f"check_grads: reverse mode (Lop), {trail}order 1 disagrees with finite differences\n"
            f"  directional derivative: symbolic={symbolic!r}, numeric={numeric!r}, "
            f"abs err={abs(symbolic - numeric):.3g}, tolerance atol={self.atol:g} + rtol={self.rtol:g}*|numeric|\n"
            f"{where}"
        )

    def locate_reverse(self, build, cotangents, float_outputs, grads) -> str:
        """Find the worst element by finite differences one coordinate at a time (first 200 coordinates)."""
        worst = None
        for k, position in enumerate(self.float_positions):
            grad = grads[k]
            for flat in range(min(grad.size, 200)):
                direction = [np.zeros_like(self.arrays[p]) for p in self.float_positions]
                direction[k].reshape(-1)[flat] = 1.0
                plus = self.evaluate(build, self.shifted(direction, self.eps))
                minus = self.evaluate(build, self.shifted(direction, -self.eps))
                numeric = sum(
                    float(np.sum((plus[i] - minus[i]) / (2 * self.eps) * c)) for i, c in zip(float_outputs, cotangents)
                )
                symbolic = float(grad.reshape(-1)[flat])
                error = abs(symbolic - numeric)
                if worst is None or error > worst[0]:
                    worst = (error, position, np.unravel_index(flat, grad.shape), symbolic, numeric)
        if worst is None:
            return "  (no element to locate)"
        error, position, index, symbolic, numeric = worst
        return (
            f"  worst element: input {position} at position {tuple(int(i) for i in index)}: "
            f"symbolic={symbolic!r}, numeric={numeric!r}, abs err={error:.3g}"
        )

    # -- comparison ----------------------------------------------------------------------------------------------
    def close(self, symbolic, numeric) -> bool:
        return bool(np.all(np.abs(np.asarray(symbolic) - numeric) <= self.atol + self.rtol * np.abs(numeric)))

    def compare(self, symbolic: np.ndarray, numeric: np.ndarray, what: str) -> None:
        if symbolic.shape != numeric.shape:
            raise GradientCheckError(f"check_grads: {what}: symbolic shape {symbolic.shape} != {numeric.shape}")
        if self.close(symbolic, numeric):
            return
        error = np.abs(symbolic - numeric) - self.rtol * np.abs(numeric)
        index = np.unravel_index(int(np.argmax(error)), symbolic.shape) if symbolic.ndim else ()
        raise GradientCheckError(
            f"check_grads: {what} disagrees with finite differences at position {tuple(int(i) for i in index)}: "
            f"symbolic={symbolic[index]!r}, numeric={numeric[index]!r}, "
            f"abs err={abs(symbolic[index] - numeric[index]):.3g}, "
            f"tolerance atol={self.atol:g} + rtol={self.rtol:g}*|numeric|"
        )
