"""Judges: score answers for a trait and for coherence, behind one interface.

Pick one with the ``judge`` config group (``conf/judge/*.yaml``):

=========  ===============================================================================
none       no judge (extraction skips vetting)
offline    the demo lexicon: exact, deterministic, only for ``demo/optimism``
openai     any OpenAI-compatible server (OpenAI, vLLM, ...): logprob-weighted 0-100 scores
local_hf   a Hugging Face causal LM in this process, scored the same way
=========  ===============================================================================

>>> from pathlib import Path
>>> judge = make_judge({"kind": "offline"}, cache_dir=Path(".cache"))
>>> spec = TraitSpec("optimism", "Hopeful framing.", trait_id="demo/optimism")
>>> judge.score_trait(spec, [("how is the garden ?", "the garden is lovely .")])
[100.0]

Every method takes a batch and returns one score per item, in order: a float in 0..100, or
None where no trustworthy score could be had (low probability on number tokens, a request
that kept failing). Configuration problems (no API key, an unreachable server, a judge
model that cannot spell numbers) raise :class:`~trait_pipeline.errors.PipelineError` once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .cache import JudgeCache
from .settings import KINDS, check_judge_config, local_hf_settings, openai_settings
from .spec import TraitSpec, load_trait_spec


@runtime_checkable
class Judge(Protocol):
    """What the steering and extraction stages call."""

    kind: str  # "openai" | "local_hf" | "offline"
    model: str  # judge model id, recorded in results (never the API key)

    def check_trait(self, trait: TraitSpec) -> None:
        """Raise PipelineError now if this judge cannot score ``trait`` (call before heavy work)."""

    def describe(self) -> dict[str, Any]:
        """Provenance for results: kind, model, method (+ base_url / revision)."""

    def score_trait(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        """(question, answer) -> how strongly the answer shows the trait, 0..100."""

    def score_coherence(self, items: list[tuple[str, str]]) -> list[float | None]:
        """(question, answer) -> fluency 0..100, capped at 50/30 when the answer dodges/ignores."""

    def score_bias(self, items: list[tuple[str, str, str]]) -> list[float | None]:
        """(question, answer, bias description) -> how much the answer exploits that
        reward-model bias, 0..100 (model-based judges only; see ``infer bias_score=true``)."""

    def score_scenarios(self, trait: TraitSpec, scenarios: list[str]) -> list[float | None]:
        """Vetting: how likely a model's continuation of each prompt shows the trait."""

    def score_responses(self, trait: TraitSpec, items: list[tuple[str, str]]) -> list[float | None]:
        """Vetting: does each continuation (prompt, response) express the trait."""


def make_judge(judge_cfg: Any, cache_dir: Path) -> Judge | None:
    """The judge ``judge_cfg`` (the composed ``cfg.judge``) describes; None for ``kind: none``.

    ``cache_dir`` is the stage's ``Path(cfg.paths.cache)``; model judges cache their answers
    under ``<cache_dir>/judge/``. Raises PipelineError for an unknown kind or a bad value.
    """
    cfg = check_judge_config(judge_cfg)
    kind = cfg["kind"]
    if kind == "none":
        return None
    if kind == "offline":
        from .offline import OfflineJudge

        return OfflineJudge(model=str(cfg.get("model", "demo-lexicon")))
    cache = JudgeCache(Path(cache_dir))
    if kind == "openai":
        from .openai_judge import OpenAIJudge

        return OpenAIJudge(openai_settings(cfg), cache)
    from .local_hf import LocalHFJudge  # imports torch and transformers: only when asked for

    return LocalHFJudge(local_hf_settings(cfg), cache)


__all__ = [
    "KINDS", "Judge", "JudgeCache", "TraitSpec", "check_judge_config", "load_trait_spec",
    "make_judge",
]
