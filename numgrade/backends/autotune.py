"""Schedule autotuning: time a kernel program's variants on the sizes it is called with, keep
the fastest, and remember the choice on disk.

A backend offers variants of one program that differ only in schedule knobs (for TVM: the
interleaved lanes of an order-``any`` reduction and the chunks of a grid-less whole-tensor
reduction). Every variant computes the same function under the fast contract: the knobs change
the order of floating-point sums, which the analysis' bound covers in any order. Variants whose
generated source is the same are one variant (a program without reductions has one).

On the first call with a given set of sizes, :class:`TunedLauncher` runs each variant once to
warm up and ``reps`` times timed, picks the smallest median (the first listed, the default, on
a tie), runs the winner once more so that the outputs are its own, and writes the choice to
``$NUMGRADE_CACHE/autotune/<key>.json``. The key hashes the default variant's source (so the
program and the code generator), the target (with the CPU model) and the sizes; a later call
or process with the same key reads the file and measures nothing. Timing is the only
nondeterminism, and it stops at the first choice: delete the file to tune again.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .compile_cache import cache_key, cache_root

Launcher = Callable[[dict, dict], None]


@dataclass
class Variant:
    """One schedule of a program: its knobs, its source (the identity) and a lazy builder."""

    knobs: dict[str, int]
    source: str
    build: Callable[[], Launcher]

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.knobs.items()))


def distinct(variants: Sequence[Variant]) -> list[Variant]:
    """The variants with distinct sources, in order (a knob a program does not use changes
    nothing in its source)."""
    seen: set[str] = set()
    out = []
    for v in variants:
        if v.source not in seen:
            seen.add(v.source)
            out.append(v)
    return out


class TunedLauncher:
    """A launcher that runs, for each set of sizes, the fastest of ``variants`` (the first is
    the default schedule)."""

    def __init__(self, variants: Sequence[Variant], target: str, reps: int = 5,
                 cache_dir: Path | None = None):
        self.variants = distinct(variants)
        if not self.variants:
            raise ValueError("autotuning needs at least one variant")
        self.target = target
        self.reps = reps
        self.cache_dir = cache_dir or cache_root("autotune")
        self.launchers: dict[int, Launcher] = {}
        self.records: dict[str, dict[str, Any]] = {}   # sizes text -> the choice and timings
        self.measured = 0                               # how many choices this object timed

    def key(self, scalars: Mapping[str, int]) -> str:
        sizes = ",".join(f"{k}={int(v)}" for k, v in sorted(scalars.items()))
        return cache_key([self.variants[0].source, self.target, sizes,
                          *(v.label for v in self.variants)])

    def _launcher(self, i: int) -> Launcher:
        if i not in self.launchers:
            self.launchers[i] = self.variants[i].build()
        return self.launchers[i]

    def _time(self, i: int, buffers: dict, scalars: dict) -> float:
        run = self._launcher(i)
        run(buffers, scalars)   # warm-up: first touch of memory, lazy runtime set-up
        times = []
        for _ in range(self.reps):
            t = time.perf_counter()
            run(buffers, scalars)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def choose(self, buffers: dict, scalars: dict) -> int:
        """The index of the variant for these sizes: from memory, the cache file, or timing."""
        sizes = ",".join(f"{k}={int(v)}" for k, v in sorted(scalars.items()))
        rec = self.records.get(sizes)
        path = self.cache_dir / f"{self.key(scalars)}.json"
        if rec is None and path.exists():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                rec = None   # a damaged entry is measured again
        if rec is None or rec.get("choice") not in [v.label for v in self.variants]:
            if len(self.variants) == 1:
                rec = {"choice": self.variants[0].label, "seconds": {}, "reps": 0}
            else:
                secs, failed = {}, {}
                for i, v in enumerate(self.variants):
                    try:
                        secs[v.label] = self._time(i, buffers, scalars)
                    except Exception as ex:  # noqa: BLE001 - a variant that cannot build or
                        if i == 0:           # run is left out; the default must work
                            raise
                        failed[v.label] = f"{type(ex).__name__}: {str(ex)[:200]}"
                best = min((i for i, v in enumerate(self.variants) if v.label in secs),
                           key=lambda i: (secs[self.variants[i].label], i))
                rec = {"choice": self.variants[best].label, "seconds": secs,
                       "reps": self.reps, "target": self.target, "sizes": sizes}
                if failed:
                    rec["failed"] = failed
                self.measured += 1
                _write_json(path, rec)
        self.records[sizes] = rec
        return [v.label for v in self.variants].index(rec["choice"])

    def __call__(self, buffers: dict, scalars: dict) -> None:
        self._launcher(self.choose(buffers, scalars))(buffers, scalars)


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: concurrent processes see a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
