"""Recording activations of many layers at once with forward hooks.

>>> # with record(model, layers=range(24), components=["residual"]) as rec:
>>> #     model(**batch)
>>> # rec.calls[("residual", 10)][0].shape   # [batch, seq, hidden] of the first forward call

With ``on_output`` nothing is stored: the callback sees each output as it is produced
(e.g. to keep only a window mean), which keeps memory flat.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import component_modules

Key = tuple[str, int]  # (component, layer)


@dataclass
class Recording:
    """Outputs per (component, layer): one tensor per forward call, detached."""

    calls: dict[Key, list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list))

    def clear(self) -> None:
        self.calls.clear()


@contextmanager
def record(
    model: nn.Module,
    layers: Iterable[int],
    components: Iterable[str] = ("residual",),
    on_output: Callable[[Key, torch.Tensor], None] | None = None,
    to_cpu: bool = False,
) -> Iterator[Recording]:
    """Hook ``components`` at ``layers``; hooks are removed on exit, even on error."""
    rec = Recording()
    handles = []
    layers = [int(la) for la in layers]

    # the hook runs once per layer per forward pass: keep it to the bare minimum
    def make_hook(key: Key):
        if on_output is not None:
            def hook(_module, _inputs, output):
                on_output(key, (output[0] if isinstance(output, tuple) else output).detach())
        else:
            calls = rec.calls

            def hook(_module, _inputs, output):
                out = (output[0] if isinstance(output, tuple) else output).detach()
                calls[key].append(out.to("cpu") if to_cpu else out)

        return hook

    try:
        for comp in components:
            for layer, mod in zip(layers, component_modules(model, layers, comp)):
                handles.append(mod.register_forward_hook(make_hook((comp, layer))))
        yield rec
    finally:
        for h in handles:
            h.remove()
