"""On-disk cache of judge answers: one small JSON file per request, written atomically.

>>> import tempfile, pathlib
>>> cache = JudgeCache(pathlib.Path(tempfile.mkdtemp()))
>>> key = cache.key({"kind": "openai", "model": "m", "messages": [{"role": "user", "content": "hi"}]})
>>> cache.get(key) is None
True
>>> cache.put(key, {"score": 87.5, "mass": 0.93}); cache.get(key)["score"]
87.5

Why files and not one database: many processes (a SLURM array, a multirun) share one cache
directory, often on a network filesystem. A file per key written to a temp file and
renamed needs no lock, a reader sees either nothing or a whole entry, and concurrent
writers of the same key write the same value, so the last rename wins harmlessly. SQLite in
WAL mode would need shared memory that NFS and Lustre do not provide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the meaning of a cached value changes


class JudgeCache:
    """Entries live under ``<cache_dir>/judge/<2 hex>/<sha256>.json``."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir) / "judge"

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.root)!r})"

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        """sha256 of the request (judge identity, messages, scoring params) as canonical JSON."""
        blob = json.dumps({"v": CACHE_VERSION, **request}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None (a missing or unreadable entry counts as a miss)."""
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            log.debug("ignoring unreadable judge cache entry %s: %s", path, exc)
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(value, f, ensure_ascii=False)
            # no fsync: a lost entry after a power cut is only a cache miss
            from ..safety.files import apply_umask

            apply_umask(tmp)  # mkstemp makes 0600 whatever the umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
