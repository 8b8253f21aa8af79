"""Shrink a violating program to a small reproducer (greedy delta debugging on our trees).

A candidate replaces one node by one of its operands (or by a parameter of the same shape), or
drops an output; formats are re-inferred bottom-up; unused lets, parameters and constants are
dropped. It is kept when numgrade still compiles it and the same kind of violation still shows
on the same input point.
"""

from __future__ import annotations

from .fmts import promote
from .gen import Node, Program, bin_fmt
from . import check as C


def retype(n: Node) -> None:
    a = n.args
    op = n.op
    if op in ("param", "const", "lit", "size"):
        return
    if op == "var":
        n.fmt = n.attrs.get("ann") or a[0].fmt
        n.shape = a[0].shape
        return
    if op == "bin":
        n.fmt = bin_fmt(n.attrs["sym"], a[0], a[1])
    elif op in ("min2", "max2"):
        n.fmt = bin_fmt("+", a[0], a[1])
    elif op == "where":
        n.fmt = "f32" if a[1].fmt is None and a[2].fmt is None else bin_fmt("+", a[1], a[2])
    elif op == "cmp":
        n.fmt = "bool"
    elif op in ("neg", "abs", "floor", "ceil", "pow", "index", "blocks", "flatten",
                "transpose"):
        n.fmt = a[0].fmt
    elif op == "math":
        n.fmt = "f32" if a[0].fmt == "i32" else a[0].fmt
    elif op == "fma":
        f = a[0].fmt
        for x in a[1:]:
            f = promote(f, x.fmt) if x.fmt else f
        n.fmt = "f32" if f == "i32" else f
    elif op == "round":
        n.fmt = n.attrs["fmt"]
    elif op == "reduce":
        f = n.attrs.get("acc") or a[0].fmt
        if n.attrs["fn"] == "mean" and f == "i32":
            f = "f32"
        n.fmt = f
    elif op == "matmul":
        f = promote(a[0].fmt, a[1].fmt)
        n.fmt = "f32" if f == "i32" else f


def _copy(prog: Program, replace: dict[int, Node], outputs: list[int] | None = None) -> Program:
    memo: dict[int, Node] = {}
    anns = {name: ann for name, ann, _ in prog.lets}

    def cp(n: Node) -> Node:
        k = id(n)
        if k in memo:
            return memo[k]
        if k in replace:
            r = cp(replace[k]) if id(replace[k]) != k else replace[k]
            memo[k] = r
            return r
        if n.op in ("param", "const", "lit", "size"):
            memo[k] = n
            return n
        m = Node(n.op, [cp(x) for x in n.args], n.fmt, n.shape, dict(n.attrs))
        if m.op == "var":
            m.attrs["ann"] = anns.get(m.attrs["name"])
        retype(m)
        memo[k] = m
        return m

    lets = []
    for name, ann, e in prog.lets:
        lets.append((name, ann, cp(e)))
    outs = [cp(o) for i, o in enumerate(prog.outputs) if outputs is None or i in outputs]
    p = Program(list(prog.params), list(prog.consts), lets, outs, list(prog.requires),
                dict(prog.dims), prog.name)
    return _prune(p)


def _walk(nodes):
    seen, order = set(), []

    def w(n):
        if id(n) in seen:
            return
        seen.add(id(n))
        for a in n.args:
            w(a)
        order.append(n)
    for n in nodes:
        w(n)
    return order


def _prune(p: Program) -> Program:
    used = _walk(p.outputs)
    vars_ = {n.attrs["name"] for n in used if n.op == "var"}
    params = {n.attrs["name"] for n in used if n.op == "param"}
    consts = {n.attrs["name"] for n in used if n.op == "const"}
    lets = [(nm, ann, e) for nm, ann, e in p.lets if nm in vars_]
    p.lets = lets
    p.params = [q for q in p.params if q.name in params]
    p.consts = [c for c in p.consts if c[0] in consts]
    # keep `requires` only where the program still needs them
    text = p.source()
    p.requires = [r for r in p.requires if not (r.startswith("N % 4") and "reshape" not in text)
                  and not (r.startswith("N >=") and ":" not in text.split("{", 1)[1])]
    if not any(q.shape for q in p.params):
        p.dims = {}
        p.requires = []
    return p


def _still(p: Program, pt: dict, kind: str) -> bool:
    if not p.params:
        return False
    pt2 = {q.name: pt[q.name] for q in p.params}
    try:
        r = C.run_program(p, seed=0, n_base=0, n_disc=0, extra_inputs=[pt2])
    except Exception:  # noqa: BLE001
        return False
    return r.status == "violation" and any(v.kind == kind for v in r.violations)


def shrink(prog: Program, pt: dict, kind: str, output: int, max_trials: int = 150):
    """Return (smaller program, its input point)."""
    trials = 0
    cur = _copy(prog, {}, [output])
    if not _still(cur, pt, kind):
        cur = prog
    changed = True
    while changed and trials < max_trials:
        changed = False
        nodes = _walk([e for _, _, e in cur.lets] + cur.outputs)
        nodes.reverse()                       # try big cuts (near the roots) first
        for n in nodes:
            if trials >= max_trials:
                break
            cands = [a for a in n.args if a.shape == n.shape and a.op != "lit"]
            for c in cands:
                trials += 1
                try:
                    cand = _copy(cur, {id(n): c})
                    cand.source()
                except Exception:  # noqa: BLE001
                    continue
                if _still(cand, pt, kind):
                    cur, changed = cand, True
                    break
            if changed:
                break
    pt2 = {q.name: pt[q.name] for q in cur.params}
    return cur, pt2
