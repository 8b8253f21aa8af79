"""The schedule stage: kernel-IR to kernel-IR rewrites that map work onto a target's programs.

Fusion decides what one kernel computes per grid point; lowering writes it for one grid point.
How many grid points one program instance runs is a question of the target: a Triton program
is a block of lanes, so a grid point whose whole work is a 16-element quantisation block
leaves most lanes idle when it gets a program of its own. Passes here are small named
functions over a :class:`KernelProgram`; each keeps the results bit for bit (they change
which program computes a value, never how), so they serve both execution contracts.

* :func:`batch_grid_points`: L consecutive grid points of a kernel with a small per-point body
  become the L lanes of one program (a parallel loop over them; the last program's extra lanes
  recompute the last grid point and store the same values again).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

from ..ir.dims import Dim
from .ir import (Assign, Decl, Kernel, KernelProgram, Let, Loop, Reduce, ScalarParam, Stmt,
                 Store, const, select, var)

I64 = "i64"


@dataclass(frozen=True)
class CeilDiv:
    """The size ceil(d / k) of a scheduled grid (a Dim holds polynomials only); evaluated by
    the host runtime like a Dim."""

    d: Dim
    k: int
    of: str = ""    # the scalar parameter holding d, from which a launcher computes it

    def evaluate(self, env: Mapping[str, int]) -> Fraction:
        v = self.d.evaluate(env)
        if v.denominator != 1:
            return v
        return Fraction(-(-v.numerator // self.k))

    def int_value(self) -> int | None:
        n = self.d.int_value()
        return None if n is None else -(-n // self.k)

    def plain_symbol(self) -> str | None:
        return None

    def symbols(self) -> set[str]:
        return self.d.symbols()

    def __str__(self) -> str:
        return f"ceil(({self.d}) / {self.k})"


def _small_body(stmts: tuple[Stmt, ...], limit: int) -> bool:
    """Every loop and reduction has a constant extent of at most ``limit`` and no serial
    state (Decl / Assign) is used: a grid point's work fits one lane."""
    for s in stmts:
        if isinstance(s, (Decl, Assign)):
            return False
        if isinstance(s, (Loop, Reduce)):
            if s.extent.op != "const" or int(s.extent.attrs[0]) > limit:
                return False
            if isinstance(s, Loop) and s.kind != "parallel":
                return False
            if not _small_body(s.body, limit):
                return False
        elif not isinstance(s, (Let, Store)):
            return False
    return True


def batch_grid_points(program: KernelProgram, lanes: int = 128,
                      max_point_work: int = 64) -> KernelProgram:
    """Run ``lanes`` consecutive points of the last grid axis in one program, for kernels whose
    per-point loops are short (block quantisers: 16 or 32 elements per point)."""
    dims: dict = dict(program.dims)
    kernels = []
    changed = False
    for k in program.kernels:
        if not k.grid or not _small_body(k.body, max_point_work) or \
                (k.grid[-1].op == "const" and int(k.grid[-1].attrs[0]) <= 1):
            kernels.append(k)
            continue
        gk = k.grid[-1]
        gname = k.grid_vars[-1]
        new_var = f"{gname}_blk"
        lane = f"{gname}_lane"
        scalars = list(k.scalars)
        if gk.op == "const":
            n = int(gk.attrs[0])
            new_extent = const(-(-n // lanes), I64)
        else:
            base = dims.get(gk.attrs[0])
            if not isinstance(base, Dim):
                kernels.append(k)
                continue
            pname = f"{gk.attrs[0]}_by{lanes}"
            dims[pname] = CeilDiv(base, lanes, gk.attrs[0])
            if all(p.name != pname for p in scalars):
                scalars.append(ScalarParam(pname, I64))
            new_extent = var(pname, I64)
        point = var(new_var, I64) * const(lanes, I64) + var(lane, I64)
        last = gk - const(1, I64)
        clamped = select(point.lt(gk), point, last)
        body = (Let(gname, clamped),) + tuple(k.body)
        loop = Loop(lane, const(lanes, I64), body, "parallel")
        kernels.append(dataclasses.replace(
            k, grid=k.grid[:-1] + (new_extent,), grid_vars=k.grid_vars[:-1] + (new_var,),
            body=(loop,), scalars=tuple(scalars),
            note=(k.note + f"; {lanes} grid points per program").lstrip("; ")))
        changed = True
    if not changed:
        return program
    return dataclasses.replace(program, kernels=kernels, dims=dims)
