"""The IR verifier accepts everything lowering produces and rejects ill-typed graphs."""

from __future__ import annotations

import pytest

import numgrade as ng
from numgrade.ir import nodes as N
from numgrade.ir.dims import Dim
from numgrade.ir.formats import FORMATS
from numgrade.ir.nodes import Op, TensorType, Value
from numgrade.ir.verify import check_value, verify

F32, BOOL = FORMATS["f32"], FORMATS["bool"]
N_, M_ = Dim.sym("N"), Dim.sym("M")


def param(name, shape, fmt=F32, i=0):
    return Value(Op.PARAM, (), (name, i), TensorType(fmt, shape))


@pytest.mark.parametrize("name", ng.stdlib_names())
def test_every_stdlib_program_verifies(name):
    verify(ng.load_stdlib(name).ir)


def test_wrong_elementwise_shape_is_reported():
    x, y = param("x", (N_,)), param("y", (M_,), i=1)
    bad = Value(Op.ADD, (x, y), (), TensorType(F32, (N_,)))
    assert "do not broadcast" in check_value(bad)[0]
    wrong = Value(Op.ADD, (x, x), (), TensorType(F32, (N_, N_)))
    assert "result shape" in check_value(wrong)[0]


def test_reduction_matmul_reshape_and_bool_rules():
    x = param("x", (M_, N_))
    assert check_value(Value(Op.SUM, (x,), ((1,), False, "any"), TensorType(F32, (M_,)))) == []
    assert check_value(Value(Op.SUM, (x,), ((2,), False, "any"), TensorType(F32, (M_,))))
    assert "inner" in check_value(Value(Op.MATMUL, (x, x), ("f32",), TensorType(F32, (M_, N_))))[0]
    assert "element count" in check_value(Value(Op.RESHAPE, (x,), (), TensorType(F32, (N_,))))[0]
    lt = Value(Op.LT, (x, x), (), TensorType(F32, (M_, N_)))
    assert "bool" in check_value(lt)[0]
    w = Value(Op.WHERE, (x, x, x), (), TensorType(F32, (M_, N_)))
    assert "bool condition" in check_value(w)[0]


def test_verify_raises_grade_error_with_the_function_name():
    x = param("x", (N_,))
    bad = Value(Op.MUL, (x, x), (), TensorType(F32, (M_,)))
    fn = N.Function("f", [N.Parameter("x", x, None)], (bad,), False, frozenset(), [], ["N"])
    with pytest.raises(ng.GradeError, match=r"IR verifier \(f\)"):
        verify(N.Module("m", {"f": fn}))
