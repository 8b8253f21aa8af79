"""The kernel backends through the public surface: f.compile / f.emit / f.fusion and
`numgrade emit`, `numgrade run --backend`, `numgrade ir --kernels`, including every error path."""

from __future__ import annotations

import numpy as np
import pytest

import numgrade as ng
from numgrade.cli import main


def test_emit_cuda_to_stdout(capsys):
    assert main(["emit", "stdlib:softmax", "softmax", "--backend", "cuda"]) == 0
    assert "__global__" in capsys.readouterr().out


def test_emit_writes_into_out_dir(tmp_path, capsys):
    assert main(["emit", "stdlib:rmsnorm", "rmsnorm", "--backend", "triton",
                 "--out", str(tmp_path / "k")]) == 0
    path = tmp_path / "k" / "rmsnorm.triton.py"
    assert path.read_text().count("@triton.jit") >= 1
    assert str(path) in capsys.readouterr().out


def test_emit_tvm_is_tvmscript(capsys):
    assert main(["emit", "stdlib:softmax", "softmax", "--backend", "tvm"]) == 0
    assert "T.prim_func" in capsys.readouterr().out


def test_emit_f64_fma_program(capsys):
    # Horner2 (f64 fma) was not lowerable; it lowers through the emulated correctly rounded fma
    assert main(["emit", "stdlib:numfuzz", "Horner2", "--backend", "cuda"]) == 0
    out = capsys.readouterr()
    assert "error:" not in out.err and out.out.strip()


def test_emit_unknown_function_and_backend(capsys):
    assert main(["emit", "stdlib:softmax", "nosuch", "--backend", "cuda"]) == 1
    assert "no function 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["emit", "stdlib:softmax", "softmax", "--backend", "bogus"])
    assert ex.value.code == 2


def test_emit_unwritable_out_is_a_diagnostic(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["emit", "stdlib:softmax", "softmax", "--backend", "cuda",
                 "--out", str(blocker)]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_ir_kernels_shows_kernels_and_bytes(capsys):
    assert main(["ir", "stdlib:nvfp4", "quantize", "--kernels"]) == 0
    out = capsys.readouterr().out
    assert "2 kernel(s) after fusion (17 before)" in out and "kernel k_quantize_1" in out


def test_run_on_a_kernel_backend_matches_reference(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ["run", "stdlib:nvfp4", "quantize", "--random", "3", "--dim", "M=4", "--dim", "N=32"]
    assert main(common + ["--out", str(a)]) == 0
    assert main(common + ["--out", str(b), "--backend", "tvm"]) == 0
    ra, rb = np.load(a), np.load(b)
    for k in ra.files:
        assert np.array_equal(ra[k].astype(np.float64), rb[k].astype(np.float64), equal_nan=True)


def test_api_compile_emit_errors_are_grade_errors():
    f = ng.load_stdlib("softmax").softmax
    with pytest.raises(ng.GradeError, match="unknown backend"):
        f.compile("bogus")
    with pytest.raises(ng.GradeError, match="unknown backend"):
        f.emit("bogus")
    h = ng.load_stdlib("numfuzz").Horner2  # f64 fma: lowers (it used to be refused)
    a, x = np.array([0.3, 7.0, 1e3]), np.array(0.1)
    assert np.array_equal(h.compile("kernel-interp", exact=True)(a, x), h(a, x))


def test_api_compiled_kernel_keeps_the_array_family():
    torch = pytest.importorskip("torch")
    f = ng.load_stdlib("nvfp4").quantize
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    want = f(x)
    got = f.compile("kernel-interp", exact=True)(x)
    for w, g in zip(want, got):
        assert g.dtype == w.dtype and np.array_equal(np.asarray(w, np.float64),
                                                     np.asarray(g, np.float64))
    q, s, s_dec = f.compile("kernel-interp", exact=True)(torch.from_numpy(x))
    assert isinstance(q, torch.Tensor) and s.dtype == torch.float8_e4m3fn


def test_api_bad_arguments_to_a_kernel_backend_are_grade_errors():
    f = ng.load_stdlib("nvfp4").quantize
    with pytest.raises(ng.GradeError, match="requires N % 16 == 0"):
        f.compile("kernel-interp")(np.zeros((2, 17), np.float32))
    with pytest.raises(ng.GradeError, match="rank"):
        f.compile("kernel-interp")(np.zeros(16, np.float32))


def test_analyze_report_carries_fusion():
    rep = ng.load_stdlib("softmax").softmax.analyze(M=4, N=128)
    d = rep.to_dict()
    assert d["fusion"]["kernels"] == 1 and d["fusion"]["bytes_value"] == 4096
