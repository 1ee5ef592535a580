"""Token positions: the ``prompt|response|all[slice]`` grammar and its directory names.

A position names a window of tokens, relative to one of three frames of a sequence:
``prompt`` (the formatted prompt), ``response`` (the generated tokens) or ``all``.
The activation of an example at a position is the mean over that window.

>>> p = Position.parse("response[:5]")
>>> p.window(prompt_len=7, seq_len=20)
(7, 12)
>>> p.dirname
'response__5'
>>> Position.from_dirname("response__5") == p
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FRAMES = ("prompt", "response", "all")
_GRAMMAR = re.compile(r"^(prompt|response|all)(?:\[(-?\d*)(?::(-?\d*))?\])?$")
_DIRNAME = re.compile(r"^(prompt|response|all)(?:_(all|-?\d*)(?:_(-?\d*))?)?$")


class PositionError(ValueError):
    """A position string or directory name that does not follow the grammar."""


@dataclass(frozen=True)
class Position:
    """A frame plus a Python-style slice; ``single`` marks ``[k]`` (one token)."""

    frame: str
    start: int | None = None
    stop: int | None = None
    single: bool = False

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``frame[slice]``; a bare frame means the whole frame (``frame[:]``)."""
        text = str(text).strip()
        m = _GRAMMAR.match(text)
        if not m:
            raise PositionError(
                f"bad position {text!r}: expected prompt|response|all with an optional slice, "
                "e.g. response[:5], response[-1], prompt[-3:], all[:]"
            )
        frame, a, b = m.group(1), m.group(2), m.group(3)
        if a is None:
            return cls(frame)
        has_colon = ":" in text
        if not has_colon:
            if a == "":
                raise PositionError(f"bad position {text!r}: empty index, expected e.g. {frame}[0]")
            return cls(frame, int(a), None, single=True)
        return cls(frame, int(a) if a else None, int(b) if b else None)

    @classmethod
    def from_dirname(cls, name: str) -> Position:
        """Inverse of :attr:`dirname`."""
        m = _DIRNAME.match(name)
        if not m:
            raise PositionError(f"bad position directory name {name!r}")
        frame, a, b = m.group(1), m.group(2), m.group(3)
        if a is None or a == "all":
            if b is not None:
                raise PositionError(f"bad position directory name {name!r}")
            return cls(frame)
        if b is None:
            if a == "":
                raise PositionError(f"bad position directory name {name!r}")
            return cls(frame, int(a), None, single=True)
        return cls(frame, int(a) if a else None, int(b) if b else None)

    def __str__(self) -> str:
        if self.single:
            return f"{self.frame}[{self.start}]"
        a = "" if self.start is None else str(self.start)
        b = "" if self.stop is None else str(self.stop)
        return f"{self.frame}[{a}:{b}]"

    @property
    def dirname(self) -> str:
        """A file-system-safe name that round-trips: ``response[:5]`` -> ``response__5``."""
        if self.single:
            return f"{self.frame}_{self.start}"
        if self.start is None and self.stop is None:
            return f"{self.frame}_all"
        a = "" if self.start is None else str(self.start)
        b = "" if self.stop is None else str(self.stop)
        return f"{self.frame}_{a}_{b}"

    def window(self, prompt_len: int, seq_len: int) -> tuple[int, int]:
        """Absolute ``[lo, hi)`` token indices of the window in an unpadded sequence.

        Non-negative bounds count from the frame start, negative ones from the frame end;
        both are clamped into the frame. An empty window has ``lo == hi``.
        """
        lo_f, hi_f = {
            "prompt": (0, prompt_len),
            "response": (prompt_len, seq_len),
            "all": (0, seq_len),
        }[self.frame]
        n = hi_f - lo_f
        if self.single:
            start = self.start if self.start >= 0 else n + self.start
            stop = start + 1
        else:
            start = 0 if self.start is None else (self.start if self.start >= 0 else n + self.start)
            stop = n if self.stop is None else (self.stop if self.stop >= 0 else n + self.stop)
        start = min(max(start, 0), n)
        stop = min(max(stop, start), n)
        return lo_f + start, lo_f + stop


def position_dirname(text: str) -> str:
    """``response[:5]`` -> ``response__5`` (also accepts a directory name unchanged)."""
    return _parse_either(text).dirname


def canonical(text: str) -> str:
    """The canonical string of a position given as a string or as a directory name."""
    return str(_parse_either(text))


def _parse_either(text: str) -> Position:
    text = str(text)
    if "[" in text or "_" not in text:
        return Position.parse(text)
    try:
        return Position.from_dirname(text)
    except PositionError:
        return Position.parse(text)  # raises with the grammar's message
