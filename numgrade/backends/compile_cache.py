"""The on-disk compile cache every backend shares: one root, one key, atomic writes.

The root is ``$NUMGRADE_CACHE`` (default ``~/.cache/numgrade``), one folder per backend under
it. An entry is a folder named by a hash of everything its contents depend on (the source,
the target, the tool's flags and version); it is complete or absent, since files are moved
into place only once written, so concurrent processes may share a cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence


def cache_root(kind: str) -> Path:
    """The folder of one backend's entries (``cuda``, ``triton``, ...)."""
    base = Path(os.environ.get("NUMGRADE_CACHE", Path.home() / ".cache" / "numgrade"))
    return base / kind


def cache_key(parts: Sequence[str]) -> str:
    """The hash naming an entry built from ``parts``."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def cached(key_parts: Sequence[str], outputs: Sequence[str], cache: Path,
           make: Callable[[Path], None]) -> Path:
    """The entry folder holding ``outputs`` for this key, running ``make(tmpdir)`` (which
    writes them into tmpdir) on a miss."""
    final = cache / cache_key(key_parts)
    if all((final / o).exists() for o in outputs):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        make(Path(tmp))
        final.mkdir(exist_ok=True)
        for o in outputs:
            os.replace(Path(tmp) / o, final / o)  # atomic per file: readers see whole files
    return final


def cached_text(key_parts: Sequence[str], name: str, text: str, kind: str) -> Path:
    """A file ``name`` holding ``text`` in the entry for ``key_parts`` (a generated source
    that a tool must read from disk, such as a Triton module)."""
    return cached(key_parts, [name], cache_root(kind),
                  lambda tmp: (tmp / name).write_text(text)) / name
