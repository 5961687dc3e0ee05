"""The op table: one ``OpCase`` row per public function (and per interesting variant, e.g. broadcasting).

A row drives every op test: forward value against NumPy, static type inference, float32 paths, gradients to
second order against finite differences, and bad input. Adding an op to the tests is adding one row to the
family's ``cases_*.py`` module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

import nbdiff as nd

# Input domains: how to draw a valid input for a row (domain-aware, as in JAX's lax tests).
DOMAINS: dict[str, Callable[[np.random.Generator, tuple], np.ndarray]] = {
    "real": lambda rng, shape: rng.uniform(-2.0, 2.0, shape),
    "positive": lambda rng, shape: rng.uniform(0.5, 2.5, shape),
    "unit": lambda rng, shape: rng.uniform(-0.9, 0.9, shape),  # open interval (-1, 1)
    "nonzero": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape),
    "away": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape),  # away from kinks at 0
    "small": lambda rng, shape: rng.uniform(-0.7, 0.7, shape),  # e.g. tan away from its poles
    "distinct": lambda rng, shape: (
        rng.permutation(int(np.prod(shape))).reshape(shape) * 0.37 + rng.uniform(0, 0.1, shape)
    ),
    "bool": lambda rng, shape: rng.uniform(0, 1, shape) > 0.5,
}


def int_domain(low: int, high: int) -> Callable[[np.random.Generator, tuple], np.ndarray]:
    """Integers in ``[low, high)``, e.g. indices."""
    return lambda rng, shape: rng.integers(low, high, shape)


@dataclass
class BadInput:
    """A misuse of the op and the error it must raise (at graph construction, or at call time if ``call``)."""

    description: str
    build: Callable[[], object]  # builds the bad graph (and calls it, for call-time errors); must raise
    error: type
    match: str = ""  # a fragment the message must contain (besides the op name)


@dataclass
class OpCase:
    """One row: a public function, how to build it on variables, its NumPy reference and its inputs."""

    name: str  # the public nbdiff name this row exercises (e.g. "tanh")
    build: Callable  # graph builder over nd variables
    reference: Callable  # NumPy reference over arrays
    shapes: Sequence[tuple]  # input shapes
    domains: Sequence = ("real",)  # per input: a DOMAINS key or a callable(rng, shape); one entry applies to all
    variant: str = ""  # distinguishes several rows of one function ("broadcast", "axis=1", ...)
    dtypes: Sequence[str] = ("float64", "float32")  # dtypes for the float inputs
    grad: bool = True  # differentiable (check gradients)
    order: int = 2  # highest derivative order checked
    static_shapes: bool = False  # give variables static shapes (some ops need them, e.g. jacobian-like ones)
    rtol32: float = 1e-4  # float32 forward tolerance
    grad_atol: float = 1e-6
    grad_rtol: float = 1e-5
    bad: Sequence[BadInput] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    def domain(self, position: int):
        spec = self.domains[position] if len(self.domains) > 1 else self.domains[0]
        return DOMAINS[spec] if isinstance(spec, str) else spec

    def arrays(self, dtype: str = "float64", seed: int = 0) -> list[np.ndarray]:
        """Inputs for this row: float domains get ``dtype``; integer and boolean domains keep their own."""
        rng = np.random.default_rng(seed)
        result = []
        for position, shape in enumerate(self.shapes):
            value = np.asarray(self.domain(position)(rng, tuple(shape)))
            if value.dtype.kind == "f":
                value = value.astype(dtype)
            result.append(value)
        return result


def call_on_unknown_shapes(build: Callable, *arrays: np.ndarray) -> object:
    """Build ``build`` on inputs of unknown shape (one per array) and call it: for errors found only at run time."""
    variables = [nd.tensor(f"in{i}", ndim=np.ndim(a)) for i, a in enumerate(arrays)]
    return nd.function(variables, build(*variables))(*arrays)


def all_cases() -> list[OpCase]:
    """Every row of every family."""
    from tests.ops import cases_elemwise, cases_indexing, cases_linalg, cases_reduce, cases_scan, cases_shape

    rows: list[OpCase] = []
    for module in (cases_elemwise, cases_reduce, cases_shape, cases_indexing, cases_linalg, cases_scan):
        rows.extend(module.CASES)
    return rows
