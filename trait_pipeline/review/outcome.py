"""A job's main measurement, in one small dict for ``run.json`` (what ``runs`` prints).

* extract: the best vector's val accuracy (only when a step actually ran; when no vector
  beats the null, the top one, marked ``beats_null: false``);
* steer: the best delta over baseline among the runs *this job* added to results.json
  (the entries whose ``snapshot`` is this job's), coherent ones first;
* infer: the mean response projection per trait and prompt set;
* compare: the mean difference b - a.

None means the job measured nothing new, so its folder is not data.

>>> of("extract", {"steps": {"vectors": "skipped"}}, None) is None
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def of(stage: str | None, returned: Any, snapshot_file: Path | None,
       min_coherence: float = 75.0) -> dict | None:
    try:
        if stage == "extract":
            return _extract(returned)
        if stage == "steer":
            return _steer(returned, snapshot_file, min_coherence)
        if stage == "infer":
            return _infer(returned)
        if stage == "compare":
            return _compare(returned)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return None


def _extract(summary: Any) -> dict | None:
    if not isinstance(summary, dict) or "ran" not in (summary.get("steps") or {}).values():
        return None
    best = summary.get("best") or {}
    beats_null = bool(best)
    if not best:  # no vector beat the null: report the top one, saying so
        per_method = summary.get("best_per_method") or {}
        if per_method:
            method, row = max(per_method.items(), key=lambda kv: kv[1].get("val_accuracy") or 0)
            best = {**row, "method": method}
    out = {"metric": "val_accuracy", "value": best.get("val_accuracy"),
           "method": best.get("method"), "layer": best.get("layer"), "beats_null": beats_null}
    return out if out["value"] is not None else {"metric": "steps", "value": None,
                                                 "steps": summary.get("steps")}


def _steer(returned: Any, snapshot_file: Path | None, min_coherence: float) -> dict | None:
    if not isinstance(returned, dict) or returned.get("results") is None or snapshot_file is None:
        return None
    path = Path(returned["results"])
    data = json.loads(path.read_text(encoding="utf-8"))
    mine = os.path.realpath(snapshot_file)
    entries = [r for r in data.get("runs", [])
               if r.get("snapshot") and os.path.realpath(path.parent / r["snapshot"]) == mine]
    if not entries:
        return None
    best, best_score = None, None
    for r in entries:
        res = r.get("result") or {}
        delta, coh = res.get("delta"), res.get("coherence_mean")
        if delta is None:
            continue
        vecs = (r.get("config") or {}).get("vectors") or []
        weights = [v.get("weight") for v in vecs]
        sign = -1.0 if (r.get("config") or {}).get("ablate") or any(
            w is not None and w < 0 for w in weights) else 1.0
        score = (coh is not None and coh >= min_coherence, sign * delta)
        if best_score is None or score > best_score:
            best, best_score = r, score
    out: dict[str, Any] = {"metric": "delta", "value": None, "n_runs": len(entries),
                           "min_coherence": min_coherence}
    if best is not None:
        res = best["result"]
        vecs = (best.get("config") or {}).get("vectors") or []
        out.update(value=res.get("delta"), coherence_mean=res.get("coherence_mean"),
                   coherent=bool(best_score[0]), layers=[v.get("layer") for v in vecs],
                   coefs=[v.get("weight") for v in vecs], key=best.get("key"))
    return out


def _infer(summary: Any) -> dict | None:
    if not isinstance(summary, dict) or not summary:
        return None
    values = [m for sets in summary.values() if isinstance(sets, dict)
              for m in sets.values() if m is not None]
    if not values:
        return None
    return {"metric": "mean_projection", "value": sum(values) / len(values), "per_trait": summary}


def _compare(record: Any) -> dict | None:
    if not isinstance(record, dict) or not isinstance(record.get("mean"), dict):
        return None
    return {"metric": "mean_diff", "value": record["mean"].get("diff"),
            "a": record.get("a"), "b": record.get("b")}
