"""results.json of a steering directory, shared by every job of a sweep.

Each change is read-merge-write under an exclusive lock on ``results.json.lock``, written
to a temp file and renamed over the old one, so parallel jobs (every layer of
``-m layer=10,20``, on one machine or on SLURM nodes sharing a file system) add their runs
without losing or half-writing any. Readers never need the lock: a rename is atomic.

Runs are keyed by :func:`run_key` over everything that changes their outcome (vectors and
coefficients, positions, ablation, multi-layer settings, generation settings, questions,
judge, vector source); a run whose key is already present is skipped, which makes a
rerun (or a requeued SLURM job) resume where it stopped.

>>> import tempfile, pathlib
>>> store = ResultsStore(pathlib.Path(tempfile.mkdtemp()) / "results.json")
>>> key = run_key({"vectors": [{"layer": 10, "weight": 4}]})
>>> store.add_run({"key": key, "result": {"trait_mean": 70.0}}, header={"trait": "demo/optimism"})
True
>>> store.add_run({"key": key, "result": {"trait_mean": 1.0}}, header={})   # same key: kept once
False
>>> [r["result"]["trait_mean"] for r in store.read()["runs"]]
[70.0]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from .errors import PipelineError
from .jsonio import read_json, write_json
from .layout import SCHEMA_VERSION

T = TypeVar("T")
LOCK_TIMEOUT_S = 900.0


def _canonical(value: Any) -> Any:
    """Numbers as floats (``4`` and ``4.0`` are one coefficient), dict keys sorted by json."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(f"{float(value):.10g}")
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)


def run_key(fields: dict) -> str:
    """A short stable hash of a run's defining fields (order of dict keys does not matter).

    >>> run_key({"a": 1, "b": [2.0]}) == run_key({"b": [2], "a": 1.0})
    True
    """
    text = json.dumps(_canonical(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def empty_results(header: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, **header, "baseline": None, "runs": []}


class ResultsStore:
    """One results.json; every write goes through :meth:`update` (lock + atomic replace)."""

    def __init__(self, path: Path, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout

    def read(self) -> dict | None:
        """The current contents, or None when there is no file yet."""
        if not self.path.is_file():
            return None
        data = read_json(self.path)
        _check_readable(data, self.path)
        return data

    def update(self, mutate: Callable[[dict], T], header: dict) -> T:
        """Apply ``mutate`` to the current contents (or a new file made from ``header``).

        Header keys missing from the file are filled in; present ones are never overwritten
        (each run carries its own provenance). Nothing is written if ``mutate`` raises.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.lock_path), timeout=self.lock_timeout):
                data = self.read()
                if data is None:
                    data = empty_results(header)
                else:
                    for k, v in header.items():
                        data.setdefault(k, v)
                    data.setdefault("runs", [])
                    data.setdefault("baseline", None)
                before = json.dumps(data, sort_keys=True, default=str)
                out = mutate(data)
                if not self.path.is_file() or json.dumps(data, sort_keys=True, default=str) != before:
                    write_json(self.path, data)  # a rerun that changes nothing rewrites nothing
                return out
        except Timeout:
            raise PipelineError(
                f"results file is locked by another job for over {self.lock_timeout:.0f} s: "
                f"{self.lock_path} (delete it if no job is running)"
            ) from None

    # --- runs ---------------------------------------------------------------------------
    def run_keys(self) -> set[str]:
        data = self.read()
        return {r["key"] for r in (data or {}).get("runs", []) if "key" in r}

    def find_run(self, key: str) -> dict | None:
        for r in (self.read() or {}).get("runs", []):
            if r.get("key") == key:
                return r
        return None

    def add_run(self, run: dict, header: dict) -> bool:
        """Append ``run`` unless a run with its key is present; True if it was added."""
        return self.add_runs([run], header)[0]

    def add_runs(self, runs: Iterable[dict], header: dict) -> list[bool]:
        runs = list(runs)
        if any("key" not in r for r in runs):
            raise ValueError("every run needs a 'key'")

        def mutate(data: dict) -> list[bool]:
            have = {r.get("key") for r in data["runs"]}
            added = []
            for r in runs:
                added.append(r["key"] not in have)
                if added[-1]:
                    data["runs"].append(r)
                    have.add(r["key"])
            return added

        return self.update(mutate, header)

    # --- baselines ----------------------------------------------------------------------
    def baseline(self, key: str) -> dict | None:
        """The baseline stored for ``key`` (its generation settings, questions and judge)."""
        data = self.read() or {}
        return baseline_for(data, key)

    def set_baseline_if_absent(self, key: str, baseline: dict, header: dict) -> dict:
        """Store ``baseline`` under ``key`` unless one is there; return the stored one.

        The first baseline of a file is also the top-level ``baseline`` (the original
        format's field); a baseline with other settings goes only under ``baselines``,
        so runs are never compared against a baseline generated differently.
        """

        def mutate(data: dict) -> dict:
            found = baseline_for(data, key)
            if found is not None:
                return found
            record = {**baseline, "key": key}
            data.setdefault("baselines", {})[key] = record
            if data.get("baseline") is None:
                data["baseline"] = record
            return record

        return self.update(mutate, header)

    # --- coefficient searches -----------------------------------------------------------
    def set_search(self, key: str, record: dict, header: dict) -> None:
        def mutate(data: dict) -> None:
            data.setdefault("searches", {})[key] = {**record, "key": key}

        self.update(mutate, header)


def baseline_for(data: dict, key: str) -> dict | None:
    base = (data.get("baselines") or {}).get(key)
    if base is None and (data.get("baseline") or {}).get("key") == key:
        base = data["baseline"]
    return base


def _check_readable(data: Any, path: Path) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        raise PipelineError(f"{path} is not a steering results file (expected an object with 'runs')")
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise PipelineError(
            f"{path} has schema_version {version!r}; this version reads up to {SCHEMA_VERSION}"
        )
