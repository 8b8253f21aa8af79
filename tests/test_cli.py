"""The command line (SPEC section 5), run as a subprocess like a user would.

Exit status: 0 success, 1 an error in the program or its input (``FILE:LINE:COL: error:``, the
source line, a caret, never a traceback), 2 bad usage.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numgrade as ng

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
# a small program for the CLI tests
fn axpy(a: f32, x: f32[N] in [-2, 2], y: f32[N]) -> f32[N] {
    return a * x + y
}

fn stats(x: f32[M, N] in [-4, 4]) -> (f32[M], f32) {
    return (sum(x, axis=1), max(abs(x)))
}

fn noisy(x: f32[N] in [-6, 6]) -> e2m1[N] ! {rand} {
    return round(x, e2m1, mode=sr)
}

fn blocks(x: f32[N]) -> f32[N/16] requires N % 16 == 0 {
    return max(reshape(x, [N/16, 16]), axis=1)
}
"""

BAD = """\
fn ok(x: f32) -> f32 { return x }

fn bad(x: f32[N]) -> f32 {
    return sum(xs)
}

fn worse(x: f32) -> f16 {
    return x
}
"""


def cli(*args: str, cwd: Path | None = None, script: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m numgrade.cli ARGS` (or the installed console script)."""
    if script:
        exe = shutil.which("numgrade", path=str(Path(sys.executable).parent)) \
            or shutil.which("numgrade")
        if exe is None:
            pytest.skip("the numgrade console script is not installed")
        cmd = [exe, *args]
    else:
        cmd = [sys.executable, "-m", "numgrade.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "good.grd").write_text(GOOD)
    (tmp_path / "bad.grd").write_text(BAD)
    return tmp_path


def any_stdlib() -> str:
    names = ng.stdlib_names()
    if not names:
        pytest.skip("no stdlib program yet")
    return "softmax" if "softmax" in names else names[0]


# --- check ------------------------------------------------------------------------------------
def test_check_ok(files):
    p = cli("check", "good.grd", cwd=files)
    assert p.returncode == 0, p.stderr
    assert "ok  axpy(a: f32, x: f32[N], y: f32[N]) -> f32[N]" in p.stdout
    assert "ok  noisy(x: f32[N]) -> e2m1[N] ! {rand}" in p.stdout
    assert len(p.stdout.strip().splitlines()) == 4
    no_traceback(p)


def test_check_error_prints_located_diagnostics(files):
    p = cli("check", "bad.grd", cwd=files)
    assert p.returncode == 1
    no_traceback(p)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    # both bad functions are reported, each as FILE:LINE:COL, the source line and a caret
    assert lines[0] == "bad.grd:4:16: error: unknown name 'xs'; did you mean 'x'?"
    assert lines[1] == "        return sum(xs)"
    assert lines[2] == "    " + " " * 15 + "^~"
    assert lines[3].startswith("bad.grd:8:12: error: result 0 has format f32 but the signature "
                               "declares f16")
    assert lines[4] == "        return x"
    assert lines[5].index("^") == 4 + 11
    assert len(lines) == 6


def test_check_syntax_error(files):
    (files / "syntax.grd").write_text("fn f(x: f32) -> f32 {\n    return x +\n}\n")
    p = cli("check", "syntax.grd", cwd=files)
    assert p.returncode == 1
    no_traceback(p)
    head, src, caret = p.stderr.splitlines()
    assert re.match(r"syntax\.grd:3:1: error: unexpected '\}'", head)
    assert src == "    }" and caret == "    ^"


def test_check_warning_goes_to_stderr_and_exits_0(files):
    (files / "warn.grd").write_text("fn f(x: f16) -> f16 { return x * 1e10 }\n")
    p = cli("check", "warn.grd", cwd=files)
    assert p.returncode == 0
    assert "ok  f(x: f16) -> f16" in p.stdout
    assert "warn.grd:1:34: warning: constant 1e+10 overflows f16" in p.stderr


def test_check_missing_file(files):
    p = cli("check", "nope.grd", cwd=files)
    assert p.returncode == 1
    no_traceback(p)
    assert "nope.grd" in p.stderr and "no such file" in p.stderr


def test_check_unreadable_inputs(files):
    (files / "latin1.grd").write_bytes(b"# caf\xe9\nfn f(x: f32) -> f32 { return x }\n")
    for arg in ("latin1.grd", str(files)):
        p = cli("check", arg, cwd=files)
        assert p.returncode == 1 and "cannot read" in p.stderr
        no_traceback(p)


def test_check_binary_garbage(files):
    (files / "garbage.grd").write_bytes(bytes(range(1, 256)).replace(b"\n", b"") * 4)
    p = cli("check", "garbage.grd", cwd=files)
    no_traceback(p)
    assert p.returncode == 1


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_check_refuses_endless_input():
    p = cli("check", "/dev/zero")
    assert p.returncode == 1
    no_traceback(p)
    assert p.stderr.startswith("/dev/zero:1:1: error: source is too large")


def test_check_stdlib_program():
    name = any_stdlib()
    p = cli("check", f"stdlib:{name}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok  ")
    p = cli("check", "stdlib:no_such_program")
    assert p.returncode == 1 and "no stdlib program 'no_such_program'" in p.stderr
    no_traceback(p)


def test_stdlib_lists_the_programs():
    p = cli("stdlib")
    assert p.returncode == 0
    assert p.stdout.split() == ng.stdlib_names()


# --- run -------------------------------------------------------------------------------------
def test_run_with_inputs_matches_the_api(files):
    a = np.array(1.5, dtype=np.float32)
    x = np.linspace(-2, 2, 8, dtype=np.float32)
    y = np.arange(8, dtype=np.float32) / 7
    for name, v in (("a", a), ("x", x), ("y", y)):
        np.save(files / f"{name}.npy", v)
    p = cli("run", "good.grd", "axpy", "--input", "a=a.npy", "--input", "x=x.npy",
            "--input", "y=y.npy", "--out", "out.npz", cwd=files)
    assert p.returncode == 0, p.stderr
    assert "out0: f32[N] shape=(8,)" in p.stdout and "wrote out.npz" in p.stdout
    want = ng.compile_source(GOOD).axpy(a, x, y)
    with np.load(files / "out.npz") as z:
        assert np.array_equal(z["out0"].astype(np.float64), want.astype(np.float64))
        assert np.array_equal(z["in_x"], x)


def test_run_tuple_results(files):
    np.save(files / "x.npy", np.arange(6, dtype=np.float32).reshape(2, 3) - 2)
    p = cli("run", "good.grd", "stats", "--input", "x=x.npy", "--out", "o.npz", cwd=files)
    assert p.returncode == 0, p.stderr
    with np.load(files / "o.npz") as z:
        assert np.array_equal(z["out0"], [-3.0, 6.0]) and z["out1"] == 3.0


def test_run_random_is_deterministic(files):
    args = ("run", "good.grd", "noisy", "--random", "7", "--dim", "N=32", "--out")
    p1 = cli(*args, "r1.npz", cwd=files)
    p2 = cli(*args, "r2.npz", cwd=files)
    p3 = cli("run", "good.grd", "noisy", "--random", "8", "--dim", "N=32", "--out", "r3.npz",
             cwd=files)
    assert p1.returncode == p2.returncode == p3.returncode == 0, p1.stderr
    with np.load(files / "r1.npz") as a, np.load(files / "r2.npz") as b, \
            np.load(files / "r3.npz") as c:
        assert np.array_equal(a["in_x"], b["in_x"])
        assert a["out0"].dtype == np.float32  # e2m1 values, exactly, in a dtype numpy knows
        assert set(np.abs(a["out0"])) <= {0, 0.5, 1, 1.5, 2, 3, 4, 6}
        assert np.array_equal(a["out0"], b["out0"])
        assert a["in_x"].shape == (32,) and np.all(np.abs(a["in_x"]) <= 6)  # declared range
        assert not np.array_equal(a["in_x"], c["in_x"])
        # the run is the API's run with the same inputs and seed
        want = ng.compile_source(GOOD).noisy(a["in_x"], seed=7)
        assert np.array_equal(a["out0"].astype(np.float64), want.astype(np.float64))
    assert p1.stdout.replace("r1.npz", "") == p2.stdout.replace("r2.npz", "")


def test_run_random_sizes_meet_requirements(files):
    p = cli("run", "good.grd", "blocks", "--random", "0", cwd=files)
    assert p.returncode == 0, p.stderr
    assert re.search(r"out0: f32\[N/16\] shape=\((\d+),\)", p.stdout)


def test_run_negative_and_huge_seeds(files):
    for seed in ("-1", str(2 ** 80)):
        p = cli("run", "good.grd", "axpy", "--random", seed, "--dim", "N=3", cwd=files)
        assert p.returncode == 0, p.stderr
        no_traceback(p)


def test_run_requirement_violation(files):
    np.save(files / "x.npy", np.zeros(20, dtype=np.float32))
    p = cli("run", "good.grd", "blocks", "--input", "x=x.npy", cwd=files)
    assert p.returncode == 1
    no_traceback(p)
    head = p.stderr.splitlines()[0]
    assert re.match(r"good\.grd:\d+:\d+: error: blocks\(\) requires N % 16 == 0, which fails "
                    r"for N = 20", head)


def _write_npz(path: Path) -> None:
    with open(path, "wb") as f:  # an .npz archive behind a .npy name
        np.savez(f, a=np.ones(2))


@pytest.mark.parametrize("make,message", [
    (lambda d: (d / "bad.npy").write_text("not an array"), "cannot load input"),
    (lambda d: np.save(d / "bad.npy", np.array([None, 1]), allow_pickle=True), "cannot load input"),
    (lambda d: _write_npz(d / "bad.npy"), "archive"),
    (lambda d: np.save(d / "bad.npy", np.ones(3) + 1j), "unsupported array dtype"),
    (lambda d: np.save(d / "bad.npy", np.array(["a", "b"])), "unsupported array dtype"),
    (lambda d: np.save(d / "bad.npy", np.ones((2, 2))), "must have rank 1"),
    (lambda d: (d / "bad.npy").write_bytes(b""), "cannot load input"),
])
def test_run_bad_npy_inputs(files, make, message):
    make(files)
    p = cli("run", "good.grd", "axpy", "--input", "x=bad.npy", "--random", "1", cwd=files)
    assert p.returncode == 1, p.stdout
    no_traceback(p)
    assert message in p.stderr


def test_run_input_mistakes(files):
    np.save(files / "x.npy", np.zeros(4, dtype=np.float32))
    cases = [
        (("--input", "x=missing.npy", "--random", "1"), "missing.npy"),
        (("--input", "nonsense", "--random", "1"), "expected NAME=PATH.npy"),
        (("--input", "q=x.npy", "--random", "1"), "has no parameter q"),
        (("--input", "x=x.npy",), "missing input(s) a, y"),
        (("--random", "1", "--dim", "N=1000000000000"), "cannot make random inputs"),
        (("--random", "1", "--out", "/nonexistent/dir/o.npz"), "cannot write"),
        (("--random", "1", "--backend", "nope"), "backend 'nope'"),
    ]
    for extra, message in cases:
        p = cli("run", "good.grd", "axpy", *extra, cwd=files)
        assert p.returncode == 1, (extra, p.stdout, p.stderr)
        no_traceback(p)
        assert message in p.stderr, (extra, p.stderr)


def test_run_unknown_function(files):
    p = cli("run", "good.grd", "axpz", "--random", "1", cwd=files)
    assert p.returncode == 1
    assert "no function 'axpz'" in p.stderr and "axpy" in p.stderr


def test_run_stdlib_program():
    name = any_stdlib()
    fn = ng.load_stdlib(name).functions[0]
    p = cli("run", f"stdlib:{name}", fn, "--random", "3", "--dim", "N=16", "--dim", "M=2")
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("out0: ")


# --- ir ------------------------------------------------------------------------------------
def test_ir_of_a_module_and_of_one_function(files):
    p = cli("ir", "good.grd", cwd=files)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("func @") == 4
    assert "func @axpy(%a: f32, %x: f32[N] in [-2.0, 2.0], %y: f32[N]) -> f32[N] {" in p.stdout
    p1 = cli("ir", "good.grd", "axpy", cwd=files)
    assert p1.returncode == 0
    assert p1.stdout.count("func @") == 1 and p1.stdout.strip() in p.stdout
    assert p1.stdout.strip() == ng.compile_source(GOOD).axpy.ir_text().strip()


def test_ir_errors(files):
    p = cli("ir", "good.grd", "nope", cwd=files)
    assert p.returncode == 1 and "no function 'nope'" in p.stderr
    p = cli("ir", "bad.grd", cwd=files)
    assert p.returncode == 1 and p.stderr.startswith("bad.grd:4:16: error:")
    no_traceback(p)


def test_ir_of_a_stdlib_program():
    name = any_stdlib()
    p = cli("ir", f"stdlib:{name}")
    assert p.returncode == 0, p.stderr
    assert "func @" in p.stdout


# --- usage ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    (), ("bogus",), ("check",), ("check", "a.grd", "b.grd"), ("run", "good.grd"),
    ("run", "good.grd", "axpy", "--random", "x"), ("run", "good.grd", "axpy", "--dim", "N"),
    ("run", "good.grd", "axpy", "--random", "1", "--dim", "N=-3"),
    ("ir",), ("--no-such-option",),
])
def test_bad_usage_exits_2(files, args):
    p = cli(*args, cwd=files)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    no_traceback(p)
    assert "numgrade: error:" in p.stderr or "usage:" in p.stderr


def test_help_exits_0():
    p = cli("--help")
    assert p.returncode == 0 and "check" in p.stdout and "run" in p.stdout


# --- entry points ------------------------------------------------------------------------------
def test_console_script(files):
    p = cli("check", "bad.grd", cwd=files, script=True)
    assert p.returncode == 1
    no_traceback(p)
    assert p.stderr.startswith("bad.grd:4:16: error: unknown name 'xs'")
    p = cli("check", "good.grd", cwd=files, script=True)
    assert p.returncode == 0 and p.stdout.startswith("ok  axpy")


def test_python_dash_m_numgrade(files):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "numgrade", "check", "good.grd"], cwd=files,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok  axpy")


def test_main_in_process(files, capsys, monkeypatch):
    from numgrade.cli import main

    monkeypatch.chdir(files)
    assert main(["check", "good.grd"]) == 0
    assert main(["check", "bad.grd"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bad.grd:4:16: error:")
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
