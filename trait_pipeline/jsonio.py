"""JSON files written atomically (temp file + rename), so a crash never leaves half a file.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.json"
>>> write_json(p, {"x": 1}); read_json(p)
{'x': 1}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .safety.files import apply_umask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        apply_umask(tmp)  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(tidy_floats(obj), indent=indent, ensure_ascii=False) + "\n")


def tidy_floats(obj: Any) -> Any:
    """``obj`` with every float that is exactly a float32 written as float32's shortest digits.

    Activations, vectors and projections are float32; ``float()`` of one prints float64 noise
    (``7.920708656311035``) that means nothing. The shortest float32 digits (``7.9207087``)
    read back to the same float32, so no precision is lost. Other floats are kept as they are.

    >>> tidy_floats({"a": [float(__import__("numpy").float32(7.9207087)), 0.1, 2]})
    {'a': [7.9207087, 0.1, 2]}
    """
    if isinstance(obj, float):
        return _float32_digits(obj)
    if isinstance(obj, dict):
        return {k: tidy_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tidy_floats(v) for v in obj]
    return obj


def _float32_digits(x: float) -> float:
    import math

    import numpy as np

    if not math.isfinite(x) or x == 0.0:
        return x
    f = np.float32(x)
    return float(str(f)) if float(f) == x else x


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"malformed JSON in {path}: line {exc.lineno}: {exc.msg}; "
                            f"{recovery_advice(path)}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"malformed JSON in {path}: not UTF-8 text; {recovery_advice(path)}") from None


def recovery_advice(path: Path) -> str:
    return (f"the file was left as it is: move it aside (mv {path} {path}.bad) and rerun to "
            "rebuild it, or restore it from a backup")


def read_json_for_update(path: Path) -> dict | None:
    """The object a read-modify-write starts from: None if there is no file yet.

    A file that exists but is not a JSON object is an error, never "empty": treating it as
    empty would overwrite whatever it held with only the current job's rows.
    """
    path = Path(path)
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise PipelineError(f"{path} does not hold a JSON object (found {type(data).__name__}); "
                            f"{recovery_advice(path)}")
    return data
