"""SASS of numgrade's Triton kernels (fast and exact contract) next to hand-written expert kernels.

    .venv/bin/python benchmarks/sass_compare.py [--arch sm_90a,sm_100a] [--recipes softmax,nvfp4]
        [--size 4096] [--out results.json] [--check] [--jobs 2]

For every recipe (softmax, rmsnorm, layernorm, fp8_tensor, fp8_1x128, nvfp4, mxfp4) the script

1. lowers the numgrade function (``f.kernels(exact=...)``) and prints it with numgrade's Triton
   emitter, compiles each kernel to PTX with Triton (in a worker process without
   ``TRITON_INTERPRET``, like ``triton_backend.compile_ptx``), with the launch options the
   emitted launcher uses (``num_warps``, ``enable_fp_fusion``, ``enable_reflect_ftz``, parsed
   from the source) and concrete sizes M = N = --size: the ``constexpr`` block sizes are the
   launcher's ``_blk(...)`` of those sizes (``compile_ptx`` itself falls back to 256 for
   symbolic extents), integer arguments stay unspecialised (numgrade marks them
   ``do_not_specialize``), and pointer arguments get ``tt.divisibility=16`` as Triton's JIT
   gives them for 16-byte-aligned torch tensors;
2. compiles the expert kernels of benchmarks/expert_kernels.py the same way (FMA contraction
   on, integer arguments specialised as the JIT does: a multiple of 16 gets divisibility 16);
3. assembles every PTX with ``ptxas -v -lineinfo --gpu-name=<arch>`` (``--fmad=false`` when the
   kernel was compiled without FP fusion, ``--regAllocOptLevel=2`` as Triton does) and
   disassembles the cubin with ``nvdisasm --print-line-info`` (``cuobjdump -sass`` shows the
   same instructions but no source lines); PTX, cubin, ptxas log and SASS are cached under
   /tmp/numgrade_sass_cache.

What is counted (per kernel; "per recipe" sums the kernels of the recipe):

* ``ipe`` (instructions per element): the dynamic SASS instruction count of one program (one
  thread's count times its 32 * num_warps threads: issued thread-instruction slots, uniform
  instructions included) divided by the input elements per program, which is the recipe's
  f32 input size M*N over the number of programs the launcher starts (the ``_n`` of
  numgrade's launcher, the grid of an expert spec).  So a kernel's ipe is its share of the
  recipe's work: a partials kernel of 1024 programs x 16384 elements divides by 16384, a
  single-program kernel that only reduces the partials by M*N (ipe ~0), and the recipe's
  ``total`` is the sum over its kernels of (all programs' dynamic instructions) / M*N, which
  compares programs with different kernel counts.
  The dynamic count weights every instruction with the trip counts of the SASS loops around
  it (nested loops multiply).  A SASS loop is a backward ``BRA`` (its target .. the last
  back edge to it).  Its source loop is the ``for``/``while`` whose header line is the back
  edge's line (``-lineinfo``; any level of inlining), else the innermost source loop holding
  >= 90% of its lines.  Its trip count per entry is, in this order:
  (1) the SASS counter's: the back edge's predicate compares a register with a constant, the
  register is set to a constant before the loop and stepped by a constant once in it, so the
  iterations are simulated (this sees ptxas' partial unrolling: a 16-trip source loop
  unrolled 4x runs 4 times; it is used when <= the source's count);
  (2) the source loop's ``ceil((b - a) / c)`` for ``range``/``tl.range``/``tl.static_range``
  with bounds evaluated from the kernel's scalar and constexpr arguments and the kernel's
  local scalars (``_t1 = tl.full((), 16384, tl.int64)``, ``v_n = tl.cast(v_n, ...)``; names
  assigned twice to different values are unknown), e.g. ``for base in range(0, 16384, B)``
  with constexpr B, or a per-lane ``for j in range(0, _t12)``; where ptxas split a runtime
  loop into an unrolled main loop and a remainder loop (two sibling SASS loops of one source
  loop), the main loop runs trips // U and the remainder trips % U times, U being the median
  ratio of the work opcodes' counts (loads, stores, float math) in the two bodies;
  (3) unknown (``while`` loops such as numgrade's pairwise-sum stack merges, loops in
  libdevice code, data-dependent bounds): counted once per entry (a lower bound).
  Loops ptxas or LLVM unrolled fully are no SASS loops: their static count is their dynamic
  count.  The JSON lists every SASS loop with its source lines, ``src_trips``,
  ``sass_trips``, ``unroll`` and the ``trips`` used.  Both sides of a branch count (an upper
  bound for guarded code); subroutines after the kernel's body (e.g. the slow path of
  ``div_rn``) and padding (NOP, the final self-branch) do not count.
* ``hot``: static instructions inside the outermost SASS loops that run more than once (the
  hot loops); for a loop-free kernel, the whole body.
* ``f64``: static count of double-precision instructions (DADD DMUL DFMA DSETP DMNMX DSET,
  ``MUFU.*64H``, and anything with an ``.F64`` type, e.g. ``F2F.F64.F32``); the JSON gives
  their opcodes, source lines (``f64_lines``) and how many are in cold subroutines.
* ``regs``/``spill``: ptxas -v registers and spill stores + loads in bytes (plus stack frame).
* ``LDG128``: whether the global loads of the hot region are 128-bit or wider (``LDG.E.128``;
  sm_100's 256-bit ``LDG.E.ENL2.256`` counts too): yes / partly / no (with the widths seen).
  A load whose address every thread shares (a register pair set straight from a kernel
  parameter: one scalar per program, e.g. the global scale) is not a data load and is left
  out; the JSON lists those as ``uniform_ldg_bits``.

The table lists each side's kernels on their own rows under the recipe (with their program
counts; the sides have different kernel counts), then the recipe's totals.  Its
``fast/expert`` ratio is the recipe total of numgrade's fast kernels over the expert's.  ``--check`` first runs the expert kernels under ``TRITON_INTERPRET=1`` on a small
input and compares them with numgrade's reference ``f(x)`` (decoded values; tolerance 2e-6
relative (floored at 1% of the largest output) for the normalisations, which use approximate
exp/div/rsqrt; exact codes for the quantisers, except that e4m3 codes may be one step off,
because the interpreter's f32 -> float8e4nv cast is not round-to-nearest-even while the GPU's
cvt.rn.satfinite is; its subnormal e4m3 results are wrong, so those are not compared).  A recipe that fails to compile or check shows its error in the table.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
EXPERT_PATH = Path(__file__).resolve().parent / "expert_kernels.py"
CACHE = Path(os.environ.get("SASS_COMPARE_CACHE", "/tmp/numgrade_sass_cache"))

# recipe -> (stdlib module, function, argument names, output formats for --check)
RECIPES = {
    "softmax": ("softmax", "softmax", ("x",), ("f32",)),
    "rmsnorm": ("rmsnorm", "rmsnorm", ("x", "w"), ("f32",)),
    "layernorm": ("layernorm", "layernorm", ("x", "w", "b"), ("f32",)),
    "fp8_tensor": ("fp8", "quantize_per_tensor", ("x",), ("e4m3", "f32")),
    "fp8_1x128": ("fp8", "quantize_block_1x128", ("x",), ("e4m3", "f32")),
    "nvfp4": ("nvfp4", "quantize", ("x",), ("e2m1", "e4m3", "f32")),
    "mxfp4": ("mxfp4", "quantize", ("x",), ("e2m1", "e8m0")),
}


# ---- tools ------------------------------------------------------------------------------------
def _triton_bin() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("triton")
    return Path(spec.origin).parent / "backends" / "nvidia" / "bin"


def tool(name: str) -> str:
    """A CUDA tool from PATH, else the copy bundled with Triton."""
    p = shutil.which(name)
    if p:
        return p
    b = _triton_bin() / name
    if b.exists():
        return str(b)
    raise RuntimeError(f"{name} not found on PATH nor in {_triton_bin()}")


def ptxas_ptx_version(ptxas: str) -> int:
    """The newest PTX ISA the ptxas accepts (Triton's rule), so Triton emits a .version it reads."""
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = map(int, re.search(r"release (\d+)\.(\d+)", out).groups())
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    return 80 + minor - (1 if minor >= 6 else 0)


# ---- Triton -> PTX in worker processes ------------------------------------------------------
_WORKER = r"""
import json, sys, importlib.util, traceback
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import triton.backends.nvidia.compiler as _nc
_nc.CUDABackend.make_cubin = lambda self, src, md, opt, cap: b""   # we run ptxas ourselves
mods = {}
out = {}
for job in json.load(sys.stdin):
    try:
        if job["path"] not in mods:
            spec = importlib.util.spec_from_file_location("sass_mod_%d" % len(mods), job["path"])
            m = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(m)
            mods[job["path"]] = m
        fn = getattr(mods[job["path"]], job["fn"])
        attrs = {(i,): [["tt.divisibility", 16]] for i in job["div16"]}
        src = ASTSource(fn, signature=job["signature"], constexprs=job["constexprs"], attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32), options=job["options"])
        out[job["key"]] = {"ptx": k.asm["ptx"]}
    except Exception:
        out[job["key"]] = {"error": traceback.format_exc()[-3000:]}
json.dump(out, sys.stdout)
"""


def compile_ptx_jobs(jobs: list[dict], nproc: int) -> dict[str, dict]:
    """PTX (or an error) per job key; cached under CACHE/ptx."""
    (CACHE / "ptx").mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for j in jobs:
        f = CACHE / "ptx" / f"{j['key']}.ptx"
        if f.exists():
            results[j["key"]] = {"ptx": f.read_text()}
        else:
            todo.append(j)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(CACHE / "triton")

    def work(chunk):
        res = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps(chunk),
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            return {j["key"]: {"error": res.stderr[-3000:]} for j in chunk}
        return json.loads(res.stdout)

    chunks = [todo[i::nproc] for i in range(nproc) if todo[i::nproc]]
    with ThreadPoolExecutor(max(1, len(chunks))) as ex:
        for part in ex.map(work, chunks):
            for key, r in part.items():
                if "ptx" in r:
                    (CACHE / "ptx" / f"{key}.ptx").write_text(r["ptx"])
                results[key] = r
    return results


def assemble(ptx: str, arch: str, fmad: bool) -> dict:
    """ptxas -v + nvdisasm: {'log', 'sass'}; cached by the PTX and flags."""
    ptxas = tool("ptxas")
    flags = ["-lineinfo", "-v", "--regAllocOptLevel=2"] + ([] if fmad else ["--fmad=false"])
    key = hashlib.sha256("\0".join([ptx, arch, *flags, ptxas]).encode()).hexdigest()[:32]
    d = CACHE / "sass" / key
    if (d / "k.sass").exists():
        return {"log": (d / "ptxas.log").read_text(), "sass": (d / "k.sass").read_text(),
                "dir": str(d)}
    d.mkdir(parents=True, exist_ok=True)
    (d / "k.ptx").write_text(ptx)
    p = subprocess.run([ptxas, *flags, f"--gpu-name={arch}", "k.ptx", "-o", "k.cubin"],
                       cwd=d, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ptxas failed: {p.stderr[-2000:]}")
    s = subprocess.run([tool("nvdisasm"), "-c", "--print-line-info", "k.cubin"], cwd=d,
                       capture_output=True, text=True)
    if s.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {s.stderr[-2000:]}")
    (d / "ptxas.log").write_text(p.stderr + p.stdout)
    (d / "k.sass").write_text(s.stdout)
    return {"log": p.stderr + p.stdout, "sass": s.stdout, "dir": str(d)}


# ---- SASS analysis ----------------------------------------------------------------------------
_INS = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LOC = re.compile(r'"([^"]+)", line (\d+)')
_LABEL = re.compile(r"^(\.L_x_\d+|\$[\w$.]+):\s*$")
_D_OPS = {"DADD", "DMUL", "DFMA", "DSETP", "DSET", "DMNMX", "DMMA"}


def is_f64(op: str) -> bool:
    parts = op.split(".")
    return parts[0] in _D_OPS or ".F64" in op or "64H" in op


def ldg_bits(op: str) -> int:
    m = re.search(r"\.(8|16|32|64|128|256)(?:\.|$)", op[3:])
    if m:
        return int(m.group(1))
    m = re.search(r"\.(U8|S8|U16|S16)", op)
    return int(m.group(1)[1:]) if m else 32


_ADDR = re.compile(r"\[(R\d+)(?:\.64)?")
_UNIFORM_SRC = re.compile(r"^(c\[0x0\]\[0x[0-9a-f]+\]|UR\d+|RZ|-?0x[0-9a-f]+|-?\d+)$")


def uniform_loads(ins: list[dict]) -> set[int]:
    """Addresses of LDGs whose address is the same for every thread: a register pair last set
    (in program order) straight from a kernel parameter (``LDC.64 R, c[0x0][..]``) or from
    uniform registers. Such a load reads one scalar per program (a global scale, an amax), not
    the data, and says nothing about how the data streams."""
    out, last = set(), {}
    for r in ins:
        if r["op"].startswith("LDG") and len(r["opnds"]) > 1:
            m = _ADDR.search(r["opnds"][1])
            if m:
                k = int(m.group(1)[1:])
                w = [last.get(f"R{k}"), last.get(f"R{k + 1}")]
                if all(x is not None and x["guard"] is None and (
                        x["op"].startswith("LDC") or x["op"] in ("MOV", "IMAD.MOV.U32"))
                        and all(_UNIFORM_SRC.match(o) for o in x["opnds"][1:]) for x in w):
                    out.add(r["addr"])
        if r["opnds"]:
            d = r["opnds"][0]
            m = re.match(r"^R(\d+)$", d.split(".")[0]) if not d.startswith("P") else None
            if m:
                n = int(m.group(1))
                last[f"R{n}"] = r
                if ".64" in r["op"] or d.endswith(".64"):
                    last[f"R{n + 1}"] = r
    return out


def _operands(body: str) -> tuple[str, list[str]]:
    """``OP a, b, c`` -> (OP, [a, b, c]) (predicate guard already removed)."""
    parts = body.split(None, 1)
    ops = [o.strip() for o in parts[1].split(",")] if len(parts) > 1 else []
    return parts[0], ops


def parse_sass(text: str, kernel_file: str) -> list[dict]:
    """Instructions of the kernel: addr, op, operands, guard, source lines, cold, branch target."""
    ins, labels, locs, cold = [], {}, [], False
    pending = []
    # Triton's cache may hand back PTX compiled from an identical source at another path, so
    # the kernel's file is any file outside the triton package (same text, same lines)
    tri = os.path.realpath(str(_triton_bin().parent.parent.parent))
    for raw in text.splitlines():
        if raw.lstrip().startswith("//##"):
            # innermost location first; the "inlined at" outer ones follow
            locs = [int(ln) for f, ln in _LOC.findall(raw)
                    if not os.path.realpath(f).startswith(tri)]
            continue
        m = _LABEL.match(raw.strip())
        if m:
            if m.group(1).startswith("$"):  # a subroutine (e.g. div_rn's slow path)
                cold = True
            pending.append(m.group(1))
            continue
        m = _INS.match(raw)
        if not m:
            continue
        text_ = m.group(2)
        g = re.match(r"^@(!?U?P[T\d]+)\s+", text_)
        body = text_[g.end():] if g else text_
        op, opnds = _operands(body)
        tgt = re.search(r"`\(([^)]+)\)", body)
        rec = {"addr": int(m.group(1), 16), "op": op, "opnds": opnds,
               "guard": g.group(1) if g else None, "line": locs[0] if locs else None,
               "locs": list(locs), "cold": cold,
               "target": tgt.group(1) if tgt and op in ("BRA", "BRX", "JMP") else None}
        for lab in pending:
            labels[lab] = rec["addr"]
        pending = []
        ins.append(rec)
    for r in ins:
        r["taddr"] = labels.get(r["target"]) if r["target"] else None
    # padding: the final self-branch and NOPs
    return [r for r in ins if r["op"] != "NOP" and not (r["op"] == "BRA" and r["taddr"] == r["addr"])]


class _TL:
    """Just enough of ``triton.language`` to evaluate scalar loop bounds of a kernel's source."""

    def __getattr__(self, name):
        return None  # dtypes (tl.int64, ...)

    @staticmethod
    def full(shape, value, dtype=None):
        if tuple(shape) != ():
            raise ValueError("not a scalar")
        return value

    @staticmethod
    def cast(x, dtype=None, **kw):
        return x

    @staticmethod
    def cdiv(a, b):
        return -(-a // b)

    @staticmethod
    def constexpr(x=None):
        return x


class _Triton:
    language = _TL()
    cdiv = staticmethod(_TL.cdiv)


def _eval_scalar(node: ast.AST, env: dict):
    """The value of a scalar expression of the kernel source, or raise."""
    tl = _TL()
    g = {"__builtins__": {}, "min": min, "max": max, "int": int, "abs": abs, "tl": tl,
         "triton": _Triton()}
    v = eval(compile(ast.Expression(node), "<loop>", "eval"), g, env)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("not a number")
    return v


def _known_scalars(func: ast.FunctionDef, env: dict) -> dict:
    """``env`` plus the kernel's local scalars that evaluate from it, in source order (e.g.
    ``_t1 = tl.full((), 16384, tl.int64)``, ``v_n = tl.cast(v_n, tl.int64)``); a name assigned
    more than once to different (or unknown) values is dropped."""
    known = dict(env)
    bad: set[str] = set()
    stmts = sorted((n for n in ast.walk(func) if isinstance(n, (ast.Assign, ast.AugAssign,
                                                                  ast.AnnAssign, ast.For))),
                   key=lambda n: (n.lineno, n.col_offset))
    for n in stmts:
        if isinstance(n, ast.For):  # the loop variable changes
            names = [t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)]
            vals = [None] * len(names)
        elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0],
                                                                            ast.Name):
            names = [n.targets[0].id]
            try:
                vals = [_eval_scalar(n.value, known)]
            except Exception:
                vals = [None]
        else:
            tgts = n.targets if isinstance(n, ast.Assign) else [n.target]
            names = [t.id for tg in tgts for t in ast.walk(tg) if isinstance(t, ast.Name)]
            vals = [None] * len(names)
        for name, v in zip(names, vals):
            if name in bad:
                continue
            if v is None or (name in known and name not in env and known[name] != v):
                bad.add(name)
                known.pop(name, None)
            elif name in env and known.get(name) != v:
                bad.add(name)
                known.pop(name, None)
            else:
                known[name] = v
    return known


def source_loops(path: str, fn: str, env: dict) -> list[dict]:
    """for/while loops of kernel ``fn``: header line, line span, trip count per entry (None if
    not evaluable).  ``range(a, b, c)``, ``tl.range`` and ``tl.static_range`` bounds evaluate
    from ``env`` (the scalar and constexpr arguments) and the kernel's local scalars."""
    tree = ast.parse(Path(path).read_text())
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fn)
    known = _known_scalars(func, env)
    out = []
    for n in ast.walk(func):
        if isinstance(n, (ast.For, ast.While)):
            trips = None
            it = n.iter if isinstance(n, ast.For) else None
            fname = (getattr(it.func, "id", None) or getattr(it.func, "attr", "")
                     if isinstance(it, ast.Call) else "")
            if fname in ("range", "static_range"):
                try:
                    a = [_eval_scalar(x, known) for x in it.args[:3]]
                    lo, hi, st = (0, a[0], 1) if len(a) == 1 else (a[0], a[1], a[2] if len(a) > 2 else 1)
                    trips = max(0, math.ceil((hi - lo) / st))
                except Exception:
                    trips = None
            out.append({"lo": n.lineno, "hi": n.end_lineno, "trips": trips,
                        "kind": type(n).__name__.lower()})
    return out


# -- trip counts from the SASS itself: a counter set to a constant before the loop, stepped by
# a constant in it and compared with a constant by the back edge's predicate
_IMM = re.compile(r"^-?(0x[0-9a-f]+|\d+)$")
_CMP = {"LT": lambda a, b: a < b, "LE": lambda a, b: a <= b, "GT": lambda a, b: a > b,
        "GE": lambda a, b: a >= b, "EQ": lambda a, b: a == b, "NE": lambda a, b: a != b}
_MIRROR = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE", "EQ": "EQ", "NE": "NE"}


def _imm(s: str):
    return int(s, 0) if _IMM.match(s) else None


def _writes(r: dict, reg: str) -> bool:
    return bool(r["opnds"]) and (r["opnds"][0] == reg or r["opnds"][0].split(".")[0] == reg)


def _const_init(r: dict, reg: str):
    """The constant an instruction puts in ``reg``, or None."""
    op, o = r["op"], r["opnds"]
    if r["guard"] or not o or o[0] != reg:
        return None
    if op in ("MOV", "MOV32I", "UMOV") and len(o) >= 2:
        return 0 if o[1] in ("RZ", "URZ") else _imm(o[1])
    if op.startswith("IMAD.MOV") and len(o) == 4 and o[1] == "RZ" and o[2] == "RZ":
        return 0 if o[3] == "RZ" else _imm(o[3])
    if op == "CS2R" and len(o) == 2 and o[1] == "SRZ":
        return 0
    if op.startswith("HFMA2") and o[1:] in (["-RZ", "RZ", "0", "0"], ["RZ", "RZ", "0", "0"]):
        return 0
    return None


def _const_step(r: dict, reg: str):
    """The constant an in-loop ``reg = reg + c`` adds, or None."""
    op, o = r["op"], r["opnds"]
    if r["guard"] or not o or o[0] != reg:
        return None
    src = [x for x in o[1:] if not re.fullmatch(r"!?U?P[T\d]+", x)]
    if op.split(".")[0] in ("IADD3", "VIADD", "IADD32I", "UIADD3", "IADD"):
        regs = [x for x in src if x not in ("RZ", "URZ")]
        imms = [_imm(x) for x in regs if _imm(x) is not None]
        if len(regs) == 2 and reg in regs and len(imms) == 1:
            return imms[0]
    return None


def sass_trips(ins: list[dict], lo: int, br: dict) -> int | None:
    """Iterations of the SASS loop [lo, back edge ``br``] per entry, from its counter, or None."""
    if not br["guard"]:
        return None
    neg = br["guard"].startswith("!")
    pred = br["guard"].lstrip("!")
    body = [r for r in ins if lo <= r["addr"] <= br["addr"]]
    before = [r for r in ins if r["addr"] < lo]
    defs = [r for r in body if r["addr"] < br["addr"] and r["opnds"]
            and r["opnds"][0] == pred and r["op"].startswith(("ISETP", "UISETP"))]
    if not defs:
        return None
    cmp_r = defs[-1]
    if ".EX" in cmp_r["op"]:  # 64-bit compare: the low half decides for small counters
        low = [r for r in defs[:-1] if ".EX" not in r["op"]]
        if not low:
            return None
        cmp_r = low[-1]
    if cmp_r["guard"]:
        return None
    f = cmp_r["op"].split(".")
    cond = next((x for x in f[1:] if x in _CMP), None)
    if cond is None or len(cmp_r["opnds"]) < 4:
        return None
    a, b = cmp_r["opnds"][2], cmp_r["opnds"][3]
    if _imm(a) is not None and _imm(b) is None:
        a, b, cond = b, a, _MIRROR[cond]
    bound = _imm(b)
    if bound is None or not re.fullmatch(r"U?R\d+", a):
        return None
    steps = [r for r in body if _writes(r, a)]
    if len(steps) != 1:
        return None
    step = _const_step(steps[0], a)
    init = None
    for r in reversed(before):
        if _writes(r, a) or (r["op"] == "CS2R" and r["opnds"] and r["opnds"][0] == a):
            init = _const_init(r, a)
            break
    if step is None or init is None or step == 0:
        return None
    u32 = "U32" in f
    norm = (lambda v: v & 0xFFFFFFFF) if u32 else (lambda v: v)
    inc_first = steps[0]["addr"] < cmp_r["addr"]
    v, n = init, 0
    while n < 10_000_000:
        n += 1
        if inc_first:
            v += step
        c = _CMP[cond](norm(v), norm(bound))
        if not inc_first:
            v += step
        if c == neg:  # the back edge is not taken: the loop exits
            return n
    return None


_OVERHEAD = ("BRA", "ISETP", "UISETP", "IADD3", "UIADD3", "VIADD", "IMAD", "UIMAD", "LEA",
             "ULEA", "MOV", "UMOV", "SEL", "IADD", "LOP3", "ULOP3", "SHF", "USHF", "BSSY", "BSYNC",
             "WARPSYNC", "BAR", "P2R", "R2P", "PLOP3")


def _unroll_factor(ins: list[dict], main: dict, rem: dict) -> int:
    """ptxas' unroll factor of a runtime loop split into an unrolled ``main`` loop and a
    one-iteration ``rem`` loop: the typical ratio of the counts of each work opcode (loads,
    stores, float math; not the counter and address arithmetic) in the two bodies."""
    def ops(lp):
        c: dict[str, int] = {}
        for r in ins:
            if lp["lo"] <= r["addr"] <= lp["hi"] and not r["op"].startswith(_OVERHEAD):
                c[r["op"]] = c.get(r["op"], 0) + 1
        return c
    a, b = ops(main), ops(rem)
    ratios = sorted(round(a[o] / b[o]) for o in b if o in a and a[o] >= b[o])
    if ratios:
        return max(1, ratios[len(ratios) // 2])
    return max(1, round(main["n"] / max(1, rem["n"])))


def analyse(sass: str, log: str, kernel_file: str, fn: str, env: dict, threads: int,
            elems_per_prog: float) -> dict:
    ins = parse_sass(sass, kernel_file)
    if not ins:
        raise RuntimeError("no SASS instructions parsed")
    srcl = source_loops(kernel_file, fn, env)
    by_head = {s["lo"]: s for s in srcl}
    # SASS loops: backward branches, merged by header; the last back edge closes the loop
    heads: dict[int, dict] = {}
    for r in ins:
        if r["op"] == "BRA" and r["taddr"] is not None and r["taddr"] < r["addr"] and not r["cold"]:
            if r["taddr"] not in heads or heads[r["taddr"]]["addr"] < r["addr"]:
                heads[r["taddr"]] = r
    loops = []
    for lo, br in sorted(heads.items(), key=lambda t: (t[0], -t[1]["addr"])):
        hi = br["addr"]
        body = [r for r in ins if lo <= r["addr"] <= hi]
        # the source loop: the back edge's line is the header of its for/while (any level of
        # inlining); else the innermost source loop holding >= 90% of the body's lines
        src, how = None, None
        for ln in br["locs"]:
            if ln in by_head:
                src, how = by_head[ln], "back edge"
                break
        if src is None:
            lines = [r["line"] for r in body if r["line"] is not None]
            for s in srcl:
                inside = sum(1 for ln in lines if s["lo"] <= ln <= s["hi"])
                if lines and inside >= 0.9 * len(lines):
                    if src is None or s["hi"] - s["lo"] < src["hi"] - src["lo"]:
                        src, how = s, "lines"
        loops.append({"lo": lo, "hi": hi, "src": src, "map": how, "n": len(body),
                      "sass_trips": sass_trips(ins, lo, br)})
    for lp in loops:
        lp["parent"] = min((o for o in loops if o is not lp and o["lo"] <= lp["lo"]
                            and lp["hi"] <= o["hi"]), key=lambda o: o["hi"] - o["lo"],
                           default=None)
    # trips per entry: the SASS counter when it resolves (this sees ptxas' unrolling: a
    # 16-trip source loop unrolled 4x runs 4 times); else the source loop's, divided by an
    # unroll factor where ptxas split it into an unrolled main loop and a remainder loop
    # (siblings mapped to the same source loop: factor = main body / remainder body)
    groups: dict = {}
    for lp in loops:
        if lp["src"] is not None:
            groups.setdefault((id(lp["src"]), id(lp["parent"])), []).append(lp)
    for lp in loops:
        st = lp["src"]["trips"] if lp["src"] is not None else None
        lp["unroll"] = None
        if lp["sass_trips"] is not None and (st is None or lp["sass_trips"] <= st):
            lp["trips"], lp["trips_from"] = lp["sass_trips"], "sass counter"
            if st and st % lp["sass_trips"] == 0:
                lp["unroll"] = st // lp["sass_trips"]
        elif st is not None:
            sib = groups[(id(lp["src"]), id(lp["parent"]))]
            if len(sib) == 2 and all(o["sass_trips"] is None for o in sib):
                big, small = sorted(sib, key=lambda o: o["n"], reverse=True)
                u = _unroll_factor(ins, big, small)
                lp["unroll"] = u
                lp["trips"] = st // u if lp is big else st % u
                lp["trips_from"] = f"source / unroll {u}"
            else:
                lp["trips"], lp["trips_from"] = st, "source"
        else:
            lp["trips"], lp["trips_from"] = None, "unknown (counted once)"
    # weight: product of the trip counts of the SASS loops around an instruction (a loop whose
    # trips are unknown counts once); a SASS loop nested in another mapped to the same source
    # loop with the source's count does not multiply again
    for r in ins:
        w, seen = 1, set()
        for lp in loops:
            if lp["lo"] <= r["addr"] <= lp["hi"]:
                if lp["trips_from"] == "source":
                    if id(lp["src"]) in seen:
                        continue
                    seen.add(id(lp["src"]))
                w *= lp["trips"] if lp["trips"] is not None else 1
        r["w"] = 0 if r["cold"] else w
    hot_loops = [lp for lp in loops if (lp["trips"] or 0) > 1]
    outer = [lp for lp in hot_loops
             if not any(o is not lp and o["lo"] <= lp["lo"] and lp["hi"] <= o["hi"]
                        for o in hot_loops)]
    hot = [r for r in ins if any(lp["lo"] <= r["addr"] <= lp["hi"] for lp in outer)] \
        if outer else [r for r in ins if not r["cold"]]
    dyn = sum(r["w"] for r in ins)
    scalar = uniform_loads(ins)
    ldg = sorted({ldg_bits(r["op"]) for r in hot
                  if r["op"].startswith("LDG") and r["addr"] not in scalar})
    ldg_all = sorted({ldg_bits(r["op"]) for r in ins
                      if r["op"].startswith("LDG") and r["addr"] not in scalar})
    wide = [b >= 128 for b in (ldg or ldg_all)]
    regs = re.search(r"Used (\d+) registers", log)
    sp = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                   log)
    f64 = [r for r in ins if is_f64(r["op"])]
    return {
        "static_instrs": sum(1 for r in ins if not r["cold"]),
        "cold_instrs": sum(1 for r in ins if r["cold"]),
        "dynamic_instrs_per_thread": dyn,
        "dynamic_instrs_per_program": dyn * threads,
        "ipe": dyn * threads / elems_per_prog,
        "hot_loop_instrs": len(hot),
        "loop_free": not outer,
        "loops": [{"sass": [hex(lp["lo"]), hex(lp["hi"])], "instrs": lp["n"],
                   "parent": hex(lp["parent"]["lo"]) if lp["parent"] else None,
                   "src_lines": [lp["src"]["lo"], lp["src"]["hi"]] if lp["src"] else None,
                   "mapped_by": lp["map"],
                   "kind": lp["src"]["kind"] if lp["src"] else None,
                   "src_trips": lp["src"]["trips"] if lp["src"] else None,
                   "sass_trips": lp["sass_trips"], "unroll": lp["unroll"],
                   "trips": lp["trips"], "trips_from": lp["trips_from"]} for lp in loops],
        "f64": len(f64),
        "f64_ops": sorted({r["op"] for r in f64}),
        "f64_lines": sorted({r["line"] for r in f64 if r["line"] is not None}),
        "f64_cold": sum(1 for r in f64 if r["cold"]),
        "regs": int(regs.group(1)) if regs else None,
        "stack": int(sp.group(1)) if sp else None,
        "spill": int(sp.group(2)) + int(sp.group(3)) if sp else None,
        "ldg_bits": ldg or ldg_all,
        "uniform_ldg_bits": sorted({ldg_bits(r["op"]) for r in ins if r["addr"] in scalar}),
        "ldg128": ("yes" if all(wide) else "partly" if any(wide) else "no") if wide else "n/a",
        "threads": threads,
        "elems_per_program": elems_per_prog,
    }


# ---- the kernels to compile ----------------------------------------------------------------
def _ptr_div16(sig: dict) -> list[int]:
    return [i for i, t in enumerate(sig.values()) if t.startswith("*")]


def numgrade_jobs(recipe: str, exact: bool, M: int, N: int) -> list[dict]:
    import numgrade as ng
    from numgrade.backends import triton_backend as tb
    mod, fname, _, _ = RECIPES[recipe]
    f = getattr(ng.load(f"stdlib:{mod}"), fname)
    program = tb.schedule_for_triton(f.kernels(exact=exact))   # what the backend launches
    source, ems = tb._emit_program(program)
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    path = CACHE / "src" / f"{digest}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != source:
        path.write_text(source)
    x = program.buffers[program.inputs[0]]
    env = {}
    for d, n in zip(x.shape, (M, N)):
        syms = list(d.symbols())
        if len(syms) == 1:
            env[syms[0]] = n
    scalars = {name: int(d.evaluate(env)) for name, d in program.dims.items()}
    # the launcher's own derived sizes (e.g. scalars['dim0_part16384'] = -(-dim0 // 16384))
    ev = {"int": int, "min": min, "max": max, "scalars": scalars, "__builtins__": {}}
    for key, expr in re.findall(r"^\s*scalars\['(\w+)'\] = (.+)$", source, re.M):
        try:
            scalars.setdefault(key, int(eval(expr, ev)))
        except Exception:
            pass
    jobs = []
    for k, em in zip(program.kernels, ems):
        sig = tb._signature(program, em)
        _, scal = em.params()
        consts = {}
        for b, he in em.blocks:
            consts[b] = 256 if he is None else tb.block_for(
                int(eval(he, {"int": int, "scalars": scalars, "__builtins__": {}})),
                tb.max_block(program))
        for f, fe in getattr(em, "flags", []):    # launcher-chosen constexpr flags (ROW)
            consts[f] = eval(fe, {"int": int, "scalars": scalars, "__builtins__": {}})
        opts = {"num_warps": 4, "enable_fp_fusion": False, "enable_reflect_ftz": False}
        m = re.search(rf"k_{re.escape(k.name)}\[\(_n,\)\]\((.*)\)\s*$", source, re.M)
        if m:
            for kw, val in re.findall(r"(num_warps|num_stages|enable_fp_fusion|"
                                      r"enable_reflect_ftz)=(\w+)", m.group(1)):
                opts[kw] = {"True": True, "False": False}.get(val, val if not val.isdigit()
                                                               else int(val))
        if opts.get("num_warps") == "_warps" and consts:
            opts["num_warps"] = tb.warps_for(*consts.values())   # the fast launcher's rule
        # programs launched: the launcher's ``_n = ...`` before ``k_<name>[(_n,)]``
        m = re.search(rf"^\s*_n = (.+)\n\s*if _n > 0:\n\s*k_{re.escape(k.name)}\[\(_n,\)\]",
                      source, re.M)
        try:
            programs = int(eval(m.group(1), ev))
        except Exception:
            programs = math.prod(k.grid_extents(scalars)) if k.grid else 1
        env_k = {f"v_{n}": scalars[n] for n, _ in scal if n in scalars}
        env_k.update(consts)
        div16 = _ptr_div16(sig)
        if getattr(program, "contract", "exact") == "fast":
            # the fast contract's kernels let the JIT specialise sizes: a multiple of 16 gets
            # divisibility 16, as Triton's launcher would give it
            names = list(sig)
            for n, _ in scal:
                if f"v_{n}" in names and n in scalars and int(scalars[n]) % 16 == 0:
                    div16.append(names.index(f"v_{n}"))
        jobs.append({"path": str(path), "fn": f"k_{k.name}", "signature": sig,
                     "constexprs": consts, "div16": sorted(div16), "options": opts,
                     "programs": programs, "env": env_k, "label": k.name})
    return jobs


def expert_jobs(recipe: str, M: int, N: int) -> list[dict]:
    import importlib.util
    spec = importlib.util.spec_from_file_location("expert_kernels_specs", EXPERT_PATH)
    ek = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ek)  # imports triton (not run here): only for the specs
    jobs = []
    for k in ek.specs(recipe, M, N):
        sig = dict(k["signature"])
        div = _ptr_div16(sig)
        names = list(sig)
        for a, v in k["ints"].items():
            if v % 16 == 0:
                div.append(names.index(a))
        env = dict(k["ints"])
        env.update(k["constexprs"])
        jobs.append({"path": str(EXPERT_PATH), "fn": k["name"], "signature": sig,
                     "constexprs": k["constexprs"], "div16": sorted(div),
                     "options": {"num_warps": k["num_warps"], "enable_fp_fusion": True},
                     "programs": math.prod(k["grid"]), "env": env, "label": k["name"]})
    return jobs


# ---- --check: expert kernels vs numgrade's reference on a small input ---------------------
def check(recipe: str, seed: int = 0) -> str:
    import numpy as np
    os.environ["TRITON_INTERPRET"] = "1"
    import numgrade as ng
    from numgrade.kernels.runtime import decode_array
    import importlib.util
    spec = importlib.util.spec_from_file_location("expert_kernels_check", EXPERT_PATH)
    ek = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ek)
    mod, fname, argn, fmts = RECIPES[recipe]
    rng = np.random.default_rng(seed)
    M, N = 4, 256
    x = (rng.standard_normal((M, N)) * rng.choice([0.01, 1.0, 30.0], (M, 1))).astype(np.float32)
    x[1, :32] = 0.0  # an all-zero quantisation block
    args = [x] + [rng.uniform(-2, 2, N).astype(np.float32) for _ in argn[1:]]
    ref = getattr(ng.load(f"stdlib:{mod}"), fname)(*[a.astype(np.float64) for a in args])
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = ek.run(recipe, *args)
    worst = []
    for i, (r, g, fmt) in enumerate(zip(ref, got, fmts)):
        r = np.asarray(r, np.float64)
        g = (np.asarray(g, np.float64) if fmt == "f32"
             else decode_array(np.asarray(g, np.uint8).reshape(-1), fmt, r.shape))
        g = np.asarray(g, np.float64).reshape(r.shape)
        if fmt == "f32" and recipe in ("softmax", "rmsnorm", "layernorm"):
            # relative, floored at 1% of the largest output (layernorm's + b cancels)
            err = np.max(np.abs(g - r) / (np.abs(r) + 0.01 * np.max(np.abs(r))))
            if not err <= 1e-5:
                raise AssertionError(f"output {i}: max relative error {err:.3g} > 1e-5")
            worst.append(f"rel err {err:.2g}")
        elif fmt == "e4m3":
            # the interpreter's f32 -> float8e4nv cast rounds ties up (and not after the
            # subnormal shift), unlike the GPU's cvt.rn.satfinite: allow one e4m3 step
            ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(r), 2.0 ** -6))) - 3)
            normal = np.minimum(np.abs(r), np.abs(g)) >= 2.0 ** -6  # subnormals: not compared
            far = int(np.sum((np.abs(g - r) > ulp) & normal))
            bad = int(np.sum((g != r) & normal))
            if far:
                raise AssertionError(f"output {i} (e4m3): {far} of {r.size} values differ by "
                                     "more than one e4m3 step")
            worst.append("exact" if not bad else f"{bad}/{r.size} one e4m3 step off "
                         "(interpreter cast)"
                         + f", {int(np.sum(~normal))} subnormal codes not compared")
        else:
            bad = int(np.sum(~((g == r) | (np.isnan(g) & np.isnan(r)))))
            if bad:
                raise AssertionError(f"output {i} ({fmt}): {bad} of {r.size} values differ")
            worst.append("exact")
    return ", ".join(worst)


# ---- driver -------------------------------------------------------------------------------
def run(recipes, archs, M, N, nproc, checks) -> dict:
    ptxas = tool("ptxas")
    ptx_version = ptxas_ptx_version(ptxas)
    import triton  # only for its version (the compiles run in workers)
    results = {"size": [M, N], "archs": archs, "ptxas": ptxas, "nvdisasm": tool("nvdisasm"),
               "triton": triton.__version__, "ptx_version": ptx_version, "recipes": {}}
    plan = []  # (recipe, variant, arch, job)
    for rc in recipes:
        results["recipes"][rc] = {"check": checks.get(rc)}
        for variant in ("fast", "exact", "expert"):
            try:
                jobs = (expert_jobs(rc, M, N) if variant == "expert"
                        else numgrade_jobs(rc, variant == "exact", M, N))
            except Exception as e:
                for arch in archs:
                    results["recipes"][rc].setdefault(arch, {})[variant] = {
                        "error": f"{type(e).__name__}: {e}"}
                continue
            for arch in archs:
                for j in jobs:
                    j2 = dict(j, arch=int(re.fullmatch(r"sm_(\d+)a?", arch).group(1)))
                    j2["options"] = dict(j["options"], ptx_version=ptx_version)
                    src_text = Path(j["path"]).read_text()
                    j2["key"] = hashlib.sha256(json.dumps(
                        [src_text, j2["fn"], j2["signature"], j2["constexprs"], j2["div16"],
                         j2["options"], j2["arch"], triton.__version__],
                        sort_keys=True).encode()).hexdigest()[:32]
                    plan.append((rc, variant, arch, j2))
    t0 = time.time()
    ptx = compile_ptx_jobs([p[3] for p in plan], nproc)
    print(f"# Triton -> PTX: {len(plan)} kernels in {time.time() - t0:.1f}s", file=sys.stderr)

    def one(item):
        rc, variant, arch, j = item
        r = ptx[j["key"]]
        if "error" in r:
            return item, {"label": j["label"], "error": r["error"].strip().splitlines()[-1]}
        try:
            asm = assemble(r["ptx"], arch, j["options"].get("enable_fp_fusion", False))
            threads = 32 * j["options"]["num_warps"]
            a = analyse(asm["sass"], asm["log"], j["path"], j["fn"], j["env"], threads,
                        M * N / j["programs"])
            a.update(label=j["label"], programs=j["programs"], sass_dir=asm["dir"],
                     options=j["options"], source=j["path"], fn=j["fn"],
                     dynamic_instrs=a["dynamic_instrs_per_program"] * j["programs"])
            return item, a
        except Exception as e:
            return item, {"label": j["label"], "error": f"{type(e).__name__}: {e}"}

    with ThreadPoolExecutor(nproc) as ex:
        for (rc, variant, arch, j), a in ex.map(one, plan):
            slot = results["recipes"][rc].setdefault(arch, {}).setdefault(
                variant, {"kernels": []})
            slot["kernels"].append(a)
    for rc in recipes:
        for arch in archs:
            for variant, slot in results["recipes"][rc].get(arch, {}).items():
                ks = slot.get("kernels", [])
                if ks and all("error" not in k for k in ks):
                    slot["total"] = {
                        # sum over the kernels of dynamic instructions / the recipe's input
                        # elements (the same as the sum of the kernels' ipe)
                        "dynamic_instrs": sum(k["dynamic_instrs"] for k in ks),
                        "ipe": sum(k["dynamic_instrs"] for k in ks) / (M * N),
                        "hot_loop_instrs": sum(k["hot_loop_instrs"] for k in ks),
                        "f64": sum(k["f64"] for k in ks),
                        "regs": max(k["regs"] or 0 for k in ks),
                        "spill": sum(k["spill"] or 0 for k in ks),
                        "ldg128": ("yes" if all(k["ldg128"] in ("yes", "n/a") for k in ks)
                                   else "no" if all(k["ldg128"] in ("no", "n/a") for k in ks)
                                   else "partly"),
                    }
    return results


def _ipe(x: float) -> str:
    return f"{x:.1f}" if x >= 0.95 or x == 0 else f"{x:.2g}"


def _cell(k: dict | None) -> str:
    if k is None:
        return ""
    if "error" in k:
        return "ERROR: " + k["error"].replace("|", "/")[:160]
    ldg = k["ldg128"] + (f" ({'/'.join(map(str, k['ldg_bits']))})" if k.get("ldg_bits") else "")
    hot = "loop-free" if k.get("loop_free") else f"hot {k['hot_loop_instrs']}"
    return (f"**{_ipe(k['ipe'])}** ipe, {hot}, f64 {k['f64']}, {k['regs']} regs, "
            f"spill {k['spill']} B, LDG128 {ldg}")


def _tcell(slot: dict | None) -> str:
    if not slot:
        return ""
    if "error" in slot:
        return "ERROR: " + slot["error"].replace("|", "/")[:160]
    t = slot.get("total")
    if t is None:
        return "ERROR (see kernels)"
    return (f"**{_ipe(t['ipe'])}** ipe, hot {t['hot_loop_instrs']}, f64 {t['f64']}, "
            f"max {t['regs']} regs, spill {t['spill']} B, LDG128 {t['ldg128']}")


VARIANTS = ("fast", "exact", "expert")


def table(results: dict) -> str:
    M, N = results["size"]
    out = []
    for arch in results["archs"]:
        out.append(f"### {arch}, f32 [{M}, {N}] (Triton {results['triton']}, "
                   f"ptxas {results['ptxas']})\n")
        out.append("ipe = SASS thread-instructions per input element (loop trip counts applied; "
                   "a kernel's: per program / input elements per program; total: sum over the "
                   "recipe's kernels of all programs' instructions / input elements); "
                   "hot = static instructions in the hot loop(s); spill = spill stores + loads.\n")
        out.append("| recipe | kernel | numgrade fast | numgrade exact | expert | fast / expert |")
        out.append("|---|---|---|---|---|---|")
        for rc, rr in results["recipes"].items():
            slots = rr.get(arch, {})
            # each side's kernels on their own rows (the programs differ in kernel count)
            for col, v in enumerate(VARIANTS):
                s = slots.get(v, {})
                if "error" in s:
                    continue  # shown in the total row
                for i, k in enumerate(s.get("kernels", [])):
                    cells = ["", "", ""]
                    cells[col] = _cell(k)
                    progs = f", {k['programs']} programs" if "programs" in k else ""
                    out.append(f"| {rc} | {v} {i}: {k.get('label')}{progs} | "
                               + " | ".join(cells) + " | |")
            tots = [slots.get(v, {}) for v in VARIANTS]
            ratio = ""
            f, e = (tots[0].get("total"), tots[2].get("total"))
            if f and e and e["ipe"]:
                ratio = f"**{f['ipe'] / e['ipe']:.2f}x**"
            chk = rr.get("check")
            name = "total" + (f" (check: {chk})" if chk else "")
            out.append(f"| {rc} | {name} | " + " | ".join(_tcell(t) for t in tots)
                       + f" | {ratio} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sm_90a", help="comma-separated, e.g. sm_90a,sm_100a")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset")
    ap.add_argument("--size", default="4096", help="N or M,N of the f32 input (default 4096)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--check", action="store_true",
                    help="first check the expert kernels against numgrade (TRITON_INTERPRET=1)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile processes")
    a = ap.parse_args(argv)
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    sz = [int(s) for s in a.size.split(",")]
    M, N = (sz[0], sz[0]) if len(sz) == 1 else sz
    archs = [s.strip() for s in a.arch.split(",") if s.strip()]
    checks = {}
    if a.check:
        # the interpreter patches triton.language in this process; the compiles run in
        # fresh worker processes, so they are not affected
        for rc in recipes:
            try:
                checks[rc] = "ok, " + check(rc)
            except Exception as e:
                checks[rc] = f"FAILED {type(e).__name__}: {str(e)[:200]}"
            print(f"# check {rc}: {checks[rc]}", file=sys.stderr)
    res = run(recipes, archs, M, N, a.jobs, checks)
    print(table(res))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
