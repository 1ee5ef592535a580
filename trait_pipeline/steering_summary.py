"""Reading steering results: best coefficient per layer under a coherence threshold, delta
over baseline, and a layer × coefficient heatmap.

Reads this project's results.json and the original research code's format alike
(``runs[].config.vectors[0].{layer,method,weight}``, ``runs[].result.{trait_mean,
coherence_mean,n}``, ``baseline.trait_mean``), so migrated files summarise the same way.

>>> res = read_results({"baseline": {"trait_mean": 40.0}, "runs": [
...     {"config": {"vectors": [{"layer": 10, "method": "probe", "weight": 4.0}]},
...      "result": {"trait_mean": 70.0, "coherence_mean": 90.0, "n": 5}},
...     {"config": {"vectors": [{"layer": 10, "method": "probe", "weight": 8.0}]},
...      "result": {"trait_mean": 95.0, "coherence_mean": 50.0, "n": 5}}]})
>>> best = best_per_layer(res)[10].best
>>> best.coef, best.delta
(4.0, 30.0)

From a shell: ``python -m trait_pipeline.steering_summary path/to/results.json [--png out.png]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError, one_line
from .jsonio import read_json

DEFAULT_MIN_COHERENCE = 75.0


@dataclass(frozen=True)
class RunRow:
    """One run, flattened: its site(s), coefficient(s), scores and baseline."""

    layers: tuple[int, ...]
    coefs: tuple[float, ...]
    method: str | None
    component: str
    trait_mean: float | None
    coherence_mean: float | None
    n: int | None
    steerability: float | None = None
    baseline_trait_mean: float | None = None
    multi_layer: str | None = None
    ablate: bool = False
    vector_variant: str | None = None
    responses: str | None = None

    @property
    def single(self) -> bool:
        """A plain one-layer additive run (what the per-layer table and heatmap show)."""
        return len(self.layers) == 1 and self.multi_layer is None and not self.ablate

    @property
    def layer(self) -> int:
        return self.layers[0]

    @property
    def coef(self) -> float:
        return self.coefs[0]

    @property
    def delta(self) -> float | None:
        if self.trait_mean is None or self.baseline_trait_mean is None:
            return None
        return self.trait_mean - self.baseline_trait_mean

    def coherent(self, min_coherence: float) -> bool:
        return self.coherence_mean is not None and self.coherence_mean >= min_coherence


@dataclass
class SteeringResults:
    """A results file, read: header fields, baseline and runs."""

    trait: str | None
    model_variant: str | None
    baseline_trait_mean: float | None
    baseline_coherence_mean: float | None
    rows: list[RunRow]
    searches: dict = field(default_factory=dict)
    path: Path | None = None


def _num(value) -> float | None:
    return None if value is None else float(value)


def _row(run: dict, data: dict) -> RunRow | None:
    cfg = run.get("config") or {}
    res = run.get("result") or {}
    n = res.get("n", res.get("n_questions"))
    baseline = _run_baseline(run, data)
    common = {
        "trait_mean": _num(res.get("trait_mean")), "coherence_mean": _num(res.get("coherence_mean")),
        "n": None if n is None else int(n), "steerability": _num(res.get("steerability")),
        "baseline_trait_mean": _num((baseline or {}).get("trait_mean")),
        "ablate": bool(cfg.get("ablate", False)), "responses": run.get("responses"),
        "vector_variant": (run.get("vector_source") or data.get("vector_source") or {}).get("model_variant"),
    }
    multi = cfg.get("multi_layer")
    multi_mode = multi.get("mode") if isinstance(multi, dict) else multi
    vectors = cfg.get("vectors")
    if vectors:
        return RunRow(
            layers=tuple(int(v["layer"]) for v in vectors),
            coefs=tuple(float(v.get("weight") or 0.0) for v in vectors),
            method=vectors[0].get("method"), component=vectors[0].get("component", "residual"),
            multi_layer=multi_mode, **common,
        )
    if cfg.get("layers"):  # the original's multi-layer run shape
        return RunRow(
            layers=tuple(int(x) for x in cfg["layers"]),
            coefs=tuple(float(x) for x in cfg.get("coefficients", [])),
            method=cfg.get("method"), component=cfg.get("component", "residual"),
            multi_layer=multi_mode or "multi", **common,
        )
    return None


def _run_baseline(run: dict, data: dict) -> dict | None:
    key = run.get("baseline_key")
    if key is not None:
        found = (data.get("baselines") or {}).get(key)
        if found is not None:
            return found
    return data.get("baseline")


def read_results(source: Path | str | dict) -> SteeringResults:
    """Parse a results.json (path or already-loaded dict), either format."""
    path = None
    data = source
    if not isinstance(source, dict):
        path = Path(source)
        data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("runs", []), list):
        raise PipelineError(f"{path or 'data'} is not a steering results file (no 'runs' list)")
    base = data.get("baseline") or {}
    rows = [r for r in (_row(run, data) for run in data.get("runs", [])) if r is not None]
    return SteeringResults(
        trait=data.get("trait"), model_variant=data.get("model_variant"),
        baseline_trait_mean=_num(base.get("trait_mean")),
        baseline_coherence_mean=_num(base.get("coherence_mean")),
        rows=rows, searches=data.get("searches") or {}, path=path,
    )


@dataclass
class LayerSummary:
    """The single-layer runs of one layer: the best coherent one, or why there is none."""

    layer: int
    n_runs: int
    best: RunRow | None
    most_coherent: RunRow | None
    best_down: RunRow | None = None  # the coherent negative coefficient that lowered the trait most
    no_effect: bool = False          # coherent runs exist, but none moved the trait their way

    def describe(self, min_coherence: float) -> str:
        found = [b for b in (self.best, self.best_down) if b is not None]
        if found:
            lines = []
            for b in found:
                delta = "n/a" if b.delta is None else f"{b.delta:+.1f}"
                steer = "" if b.steerability is None else f", steerability {b.steerability:.0%}"
                lines.append(f"layer {self.layer:>3}: best coef {b.coef:<8g} trait {b.trait_mean:5.1f} "
                             f"delta {delta:>6} coherence {b.coherence_mean:5.1f}{steer}  ({self.n_runs} runs)")
            return "\n  ".join(lines)
        if self.no_effect:
            return (f"layer {self.layer:>3}: no best coef — no coherent run moved the trait "
                    f"({self.n_runs} runs, every delta 0 or the wrong way)")
        mc = self.most_coherent
        tail = (f"; most coherent: coef {mc.coef:g} at {mc.coherence_mean:.1f}"
                if mc is not None and mc.coherence_mean is not None else "")
        return (f"layer {self.layer:>3}: no run reaches coherence {min_coherence:g} "
                f"({self.n_runs} runs){tail}")


def best_per_layer(
    results: SteeringResults, min_coherence: float = DEFAULT_MIN_COHERENCE,
    method: str | None = None, component: str | None = None, vector_variant: str | None = None,
) -> dict[int, LayerSummary]:
    """Per layer, the single-layer run with the largest delta among those with coherence ≥
    ``min_coherence`` (optionally only one method / component / vector source).

    Positive coefficients count when they raise the trait (``best``), negative ones when
    they lower it (``best_down``): a run that moved nothing is nobody's best.
    """
    by_layer: dict[int, list[RunRow]] = defaultdict(list)
    for r in results.rows:
        if not r.single:
            continue
        if (method and r.method != method) or (component and r.component != component):
            continue
        if vector_variant and r.vector_variant not in (None, vector_variant):
            continue
        by_layer[r.layer].append(r)
    out = {}
    for layer in sorted(by_layer):
        rows = by_layer[layer]
        ok = [r for r in rows if r.coherent(min_coherence) and r.delta is not None]
        up = [r for r in ok if r.coef >= 0 and r.delta > 0]
        down = [r for r in ok if r.coef < 0 and r.delta < 0]
        scored = [r for r in rows if r.coherence_mean is not None]
        out[layer] = LayerSummary(
            layer=layer, n_runs=len(rows),
            best=max(up, key=lambda r: r.delta) if up else None,
            most_coherent=max(scored, key=lambda r: r.coherence_mean) if scored else None,
            best_down=min(down, key=lambda r: r.delta) if down else None,
            no_effect=bool(ok) and not up and not down,
        )
    return out


def format_summary(results: SteeringResults, min_coherence: float = DEFAULT_MIN_COHERENCE) -> str:
    """The table the stage prints at its end (and the CLI prints)."""
    lines = []
    head = f"{results.trait or '?'} on {results.model_variant or '?'}"
    if results.baseline_trait_mean is not None:
        coh = results.baseline_coherence_mean
        head += f": baseline trait {results.baseline_trait_mean:.1f}"
        head += "" if coh is None else f", coherence {coh:.1f}"
    lines.append(head + f"; best coefficient per layer with coherence >= {min_coherence:g}:")
    groups = sorted({(r.method or "?", r.component) for r in results.rows if r.single})
    for method, component in groups:
        if len(groups) > 1:
            lines.append(f"  [{method} / {component}]")
        table = best_per_layer(results, min_coherence, method=None if method == "?" else method,
                               component=component)
        lines.extend("  " + s.describe(min_coherence) for s in table.values())
    others = [r for r in results.rows if not r.single]
    for r in others:
        kind = "ablation" if r.ablate else f"multi-layer {r.multi_layer}"
        delta = "n/a" if r.delta is None else f"{r.delta:+.1f}"
        coh = "n/a" if r.coherence_mean is None else f"{r.coherence_mean:.1f}"
        lines.append(f"  {kind} layers {list(r.layers)}: delta {delta}, coherence {coh}")
    saturated: dict[str, list] = {}
    for s in results.searches.values():
        if s.get("status") == "saturated":
            saturated.setdefault(s.get("direction", "up"), []).append(s.get("layer"))
    for direction, layers in saturated.items():
        from .coef_search import saturation_message

        base = results.baseline_trait_mean or 0.0
        lines.append(f"  layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, sorted(layers)))}: "
                     f"{saturation_message(base, direction)} (no best coef)")
    for s in results.searches.values():
        if s.get("status") == "no_coherent_step":
            lines.append(f"  search at layer {s.get('layer')}: NO COHERENT STEP "
                         f"(coefs tried: {[st.get('coef') for st in s.get('steps', [])]})")
    if not results.rows and not saturated:
        lines.append("  (no runs)")
    return "\n".join(lines)


@dataclass
class HeatmapGrid:
    """Single-layer runs pivoted to layer (rows) × coefficient (columns); None = no run.

    ``delta``, ``coherence`` and ``trait`` hold the run's delta over baseline, coherence
    mean and trait mean; a later run of the same cell wins, as in the results file.
    """

    layers: list[int]
    coefs: list[float]
    delta: list[list[float | None]]
    coherence: list[list[float | None]]
    trait: list[list[float | None]]
    keys: list[list[int | None]]  # index of the cell's row in ``results.rows``


def heatmap_grid(
    results: SteeringResults, method: str | None = None, component: str | None = None,
) -> HeatmapGrid:
    """Pivot the single-layer runs (optionally one method / component) to a grid."""
    picked = [(i, r) for i, r in enumerate(results.rows) if r.single
              and (method is None or r.method == method)
              and (component is None or r.component == component)]
    layers = sorted({r.layer for _, r in picked})
    coefs = sorted({r.coef for _, r in picked})

    def empty() -> list[list]:
        return [[None] * len(coefs) for _ in layers]

    grid = HeatmapGrid(layers, coefs, empty(), empty(), empty(), empty())
    for i, r in picked:
        a, b = layers.index(r.layer), coefs.index(r.coef)
        grid.delta[a][b], grid.coherence[a][b] = r.delta, r.coherence_mean
        grid.trait[a][b], grid.keys[a][b] = r.trait_mean, i
    return grid


def heatmap_png(
    results: SteeringResults, out: Path, min_coherence: float = DEFAULT_MIN_COHERENCE,
    method: str | None = None, component: str | None = None,
) -> Path | None:
    """Write a layer × coefficient heatmap of delta over baseline; None if nothing to plot.

    Cells below the coherence threshold are hatched and their value greyed.
    """
    cells = heatmap_grid(results, method, component)
    if not any(d is not None for row in cells.delta for d in row):
        return None
    try:
        import matplotlib
    except ImportError:  # a bare GPU box may lack it: the results are in results.json anyway
        print("heatmap: skipped (matplotlib is not installed)", flush=True)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, coefs = cells.layers, cells.coefs
    grid = np.array([[np.nan if d is None else d for d in row] for row in cells.delta], dtype=float)
    incoherent = np.array([[c is None or c < min_coherence for c in row] for row in cells.coherence],
                          dtype=bool)
    lim = float(np.nanmax(np.abs(grid))) or 1.0
    # at least 4 x 3.2 in: room for the axis labels whatever the grid's size
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + 0.75 * len(coefs)),
                                    max(3.2, 1.4 + 0.45 * len(layers))))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(layers)):
        for j in range(len(coefs)):
            if math.isnan(grid[i, j]):
                continue
            if incoherent[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                           edgecolor="0.5", linewidth=0))
            ax.text(j, i, f"{grid[i, j]:+.0f}", ha="center", va="center", fontsize=7,
                    color="0.55" if incoherent[i, j] else "black")
    ax.set_xticks(range(len(coefs)), [f"{c:g}" for c in coefs], rotation=45, fontsize=7)
    ax.set_yticks(range(len(layers)), [str(la) for la in layers], fontsize=7)
    ax.set_xlabel("coefficient")
    ax.set_ylabel("layer\n(output of decoder block L)")
    ax.set_title(f"{results.trait or ''} on {results.model_variant or ''}: delta over baseline\n"
                 f"hatched = coherence < {min_coherence:g}", fontsize=8)
    fig.colorbar(im, ax=ax, label="trait delta")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, metadata={"Software": None})
        if not (out.is_file() and out.read_bytes() == Path(tmp).read_bytes()):
            os.replace(tmp, out)  # same picture as on disk: leave the file (and its mtime) alone
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trait_pipeline.steering_summary",
        description="Best steering coefficient per layer under a coherence threshold.",
    )
    parser.add_argument("results", type=Path, help="a steering results.json (either format)")
    parser.add_argument("--min-coherence", type=float, default=DEFAULT_MIN_COHERENCE)
    parser.add_argument("--png", type=Path, default=None, help="also write a layer x coef heatmap")
    args = parser.parse_args(argv)
    try:
        res = read_results(args.results)
        print(format_summary(res, args.min_coherence))
        if args.png is not None:
            written = heatmap_png(res, args.png, args.min_coherence)
            print(f"heatmap: {written}" if written else "heatmap: nothing to plot")
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
