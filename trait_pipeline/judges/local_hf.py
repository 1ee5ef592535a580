"""A judge that runs a Hugging Face causal LM in this process.

>>> # judge = LocalHFJudge(LocalHFSettings(model="meta-llama/Llama-3.1-8B-Instruct"), cache=None)
>>> # judge.score_coherence([("how is the project going ?", "it is going well .")])
>>> # [88.1]

The prompts are the OpenAI judge's, rendered with the model's chat template when it has
one. The score reads the *whole* next-token distribution after the prompt (not just a top
20): the probability-weighted mean over the tokens whose decoded text is an integer 0-100,
renormalised by their mass. The relevance verdict of the coherence check is a short greedy
generation.

The method needs whole numbers as single tokens. Vocabularies that spell every number
digit by digit (Qwen, Gemma, Mistral) would only reveal the first digit, so such a model
is refused with a clear error rather than silently scored on a 0-9 scale.
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from ..config import VariantSpec
from ..errors import PipelineError
from ..generation import batched, generate
from ..models import LoadedModel, load_variant
from . import prompts as P
from .cache import JudgeCache
from .prompt_judge import PromptJudge
from .scoring import RawScore, integer_value
from .settings import LocalHFSettings

log = logging.getLogger(__name__)

MIN_TWO_DIGIT_TOKENS = 45  # of the 90 numbers 10..99; fewer means numbers are split into digits


@dataclass(frozen=True)
class NumberTokens:
    """The vocabulary entries that spell an integer 0..100, and their values."""

    ids: torch.Tensor  # long [n]
    values: torch.Tensor  # float [n]

    @classmethod
    def of(cls, tokenizer: Any) -> NumberTokens:
        """Scan the vocabulary (decoded one token at a time; special tokens skipped).

        >>> # NumberTokens.of(tok).values.tolist()[:3]
        >>> # [0.0, 1.0, 2.0]
        """
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        ids = [i for i in range(len(tokenizer)) if i not in special]
        texts = tokenizer.batch_decode([[i] for i in ids])
        pairs = [(i, integer_value(t)) for i, t in zip(ids, texts)]
        pairs = [(i, v) for i, v in pairs if v is not None]
        return cls(
            ids=torch.tensor([i for i, _ in pairs], dtype=torch.long),
            values=torch.tensor([float(v) for _, v in pairs], dtype=torch.float32),
        )

    def distinct_values(self) -> set[int]:
        return {int(v) for v in self.values.tolist()}


class LocalHFJudge(PromptJudge):
    """Logprob-scored judge on a local model; see the module docstring."""

    kind = "local_hf"

    def __init__(self, settings: LocalHFSettings, cache: JudgeCache | None,
                 lm: LoadedModel | None = None) -> None:
        super().__init__(settings.min_mass, cache if settings.cache else None)
        self.settings = settings
        self.model = settings.model
        spec = VariantSpec(
            name="judge", model=settings.model, lora=None,
            use_chat_template=settings.use_chat_template, dtype=settings.dtype,
            revision=settings.revision,
        )
        self.lm = lm if lm is not None else load_variant(spec, device=settings.device)
        self.numbers = NumberTokens.of(self.lm.tokenizer)
        self._check_numbers()
        self._batch_size = int(settings.batch_size)
        self._keep_last_only = "logits_to_keep" in inspect.signature(self.lm.model.forward).parameters

    def __repr__(self) -> str:
        return f"LocalHFJudge(model={self.model!r}, device={str(self.lm.device)!r})"

    def _check_numbers(self) -> None:
        values = self.numbers.distinct_values()
        if not values:
            raise PipelineError(
                f"judge model {self.model!r} has no token that spells an integer 0..100, so it "
                "cannot give a 0-100 score; pick another judge.model, or judge=openai / judge=offline"
            )
        two_digit = len(values & set(range(10, 100)))
        if two_digit < MIN_TWO_DIGIT_TOKENS:
            raise PipelineError(
                f"judge model {self.model!r} spells numbers digit by digit (it has tokens for only "
                f"{two_digit} of the numbers 10..99), so its first token cannot carry a 0-100 score; "
                "pick a judge.model whose vocabulary has whole-number tokens (e.g. Llama 3)"
            )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "revision": self.settings.revision, "dtype": self.settings.dtype}

    def _identity(self) -> dict[str, Any]:
        s = self.settings
        return {"kind": self.kind, "model": self.model, "revision": s.revision, "dtype": s.dtype,
                "chat": self.lm.chat}

    def _render(self, messages: P.Messages) -> str:
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
        return self.lm.format_prompt(user, system_prompt=system)

    @torch.no_grad()
    def _score_uncached(self, prompts: list[P.Messages]) -> list[RawScore | None]:
        rows = self.lm.encode([self._render(m) for m in prompts])
        out: list[RawScore | None] = [None] * len(rows)
        ids = self.numbers.ids.to(self.lm.device)
        values = self.numbers.values.to(self.lm.device)
        bar = tqdm(total=len(rows), desc="judge score", unit="prompt", file=sys.stderr,
                   leave=False, disable=len(rows) < 2)

        def run(start: int, end: int) -> None:
            batch = self.lm.pad_batch(rows[start:end])
            mask = batch["attention_mask"]
            # left padding: count positions from each row's first real token, as if unpadded
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {"use_cache": False}
            if self._keep_last_only:
                kwargs["logits_to_keep"] = 1
            logits = self.lm.model(input_ids=batch["input_ids"], attention_mask=mask,
                                   position_ids=position_ids, **kwargs).logits[:, -1]
            probs = torch.softmax(logits.float(), dim=-1)[:, ids]
            mass = probs.sum(-1)
            score = (probs * values).sum(-1) / mass.clamp(min=torch.finfo(torch.float32).tiny)
            for i, (m, s) in enumerate(zip(mass.tolist(), score.tolist())):
                out[start + i] = RawScore(s if m > 0 else None, min(m, 1.0))

        try:
            self._batch_size = batched(len(rows), run, self._batch_size, progress=bar.update)
        finally:
            bar.close()
        return out

    def _verdict_uncached(self, prompts: list[P.Messages]) -> list[str | None]:
        gens = generate(
            self.lm, [self._render(m) for m in prompts], formatted=True,
            max_new_tokens=self.verdict_tokens, batch_size=self._batch_size,
        )
        return [g.response_text.strip() for g in gens]
