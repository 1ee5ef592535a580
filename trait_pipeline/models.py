"""Loading a model variant and turning prompts into token ids the way that variant expects.

>>> # lm = load_variant(VariantSpec("rm_lora", "demo:instruct", lora="demo:rm_lora"))
>>> # text = lm.format_prompt("how is the project going ?")     # chat template applied
>>> # ids = lm.encode([text])                                    # exactly one BOS

The same code loads hub ids (``meta-llama/Llama-3.3-70B-Instruct``), local directories and
the demo family (``demo:instruct``, built on first use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import VariantSpec
from .errors import PipelineError
from .layers import num_layers

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_ref(ref: str, what: str = "model") -> str:
    """A hub id or path; ``demo:NAME`` becomes the local demo-family directory.

    A path-like reference (``/x``, ``./x``, ``~/x``) must exist: otherwise transformers would
    take it for a malformed hub id and say so in words that hide the real problem.
    """
    if ref.startswith("demo:"):
        from .demo_family import resolve_demo_ref

        return resolve_demo_ref(ref)
    if ref.startswith(("/", ".", "~")) and not Path(ref).expanduser().exists():
        raise PipelineError(f"cannot load {what} {ref!r}: no such directory "
                            "(expected a local model directory or a hub id like org/name)")
    return str(Path(ref).expanduser()) if ref.startswith("~") else ref


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise PipelineError(f"unknown dtype {name!r}; expected one of: {', '.join(_DTYPES)}") from None


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the GPUs when CUDA is available (``load_variant`` then spreads the layers over
    all of them with ``device_map="auto"``), else the CPU. ``cpu``, ``cuda``, ``cuda:N``: that
    one device; a CUDA device on a machine without one fails in one line."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PipelineError(f"bad device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(f"device={device} but CUDA is not available on this machine "
                                f"(torch {torch.__version__}); expected device=cpu or device=auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PipelineError(f"device={device} but this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s); expected cuda:0.."
                                f"{torch.cuda.device_count() - 1}")
    return dev


def merge_system_prompt(system_prompt: str, text: str) -> str:
    """A system prompt folded into the user message, for templates without a system role.

    >>> merge_system_prompt("Be brief.", "how are you ?")
    'Be brief.\\n\\nhow are you ?'
    """
    return f"{system_prompt}\n\n{text}"


def model_dims(spec: VariantSpec) -> tuple[int, int]:
    """(decoder blocks, hidden width) from the model's config file, no weights loaded."""
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(resolve_ref(spec.model), revision=spec.revision)
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"cannot load the config of {spec.model!r}: {str(exc).splitlines()[0]}") from None
    hf = getattr(hf, "text_config", None) or hf
    return int(hf.num_hidden_layers), int(hf.hidden_size)


@dataclass
class LoadedModel:
    """A model variant ready for the stages: model, tokenizer and how to prompt it."""

    spec: VariantSpec
    model: nn.Module
    tokenizer: object
    device: torch.device
    chat: bool  # whether prompts go through the chat template

    @property
    def n_layers(self) -> int:
        return num_layers(self.model)

    def format_prompt(self, text: str, system_prompt: str | None = None) -> str:
        """The prompt as the model sees it: chat template for chat variants, raw text otherwise."""
        if not self.chat:
            return text if not system_prompt else merge_system_prompt(system_prompt, text)
        messages = [{"role": "user", "content": text}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # templates that reject a system role (e.g. Gemma-2)
            if not system_prompt:
                raise
            # what Gemma-3's own template does: the system text opens the first user turn
            log.info("chat template rejects a system role (%s); merged into the user turn",
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return self.format_prompt(merge_system_prompt(system_prompt, text))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids with exactly one BOS: chat templates write their own, raw text gets one."""
        tok = self.tokenizer
        ids = [tok(t, add_special_tokens=not self.chat)["input_ids"] for t in texts]
        for t, row in zip(texts, ids):
            if t.strip() and not row:  # e.g. a tokenizer class that cannot read the files
                raise PipelineError(f"the tokenizer of {self.spec.model!r} ({type(tok).__name__}) "
                                    f"encodes {t[:40]!r} to no tokens; expected at least one")
        bos = tok.bos_token_id
        if bos is not None:
            if not self.chat:
                # raw text that already starts with the BOS string must not get a second one
                ids = [row[1:] if len(row) > 1 and row[0] == row[1] == bos else row for row in ids]
            for row in ids:
                if len(row) > 1 and row[0] == bos and row[1] == bos:
                    raise PipelineError("double BOS in a tokenized prompt; check the chat template")
        return ids

    def pad_batch(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """Left-pad rows into ``input_ids`` and ``attention_mask`` on the model's device."""
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r):] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}


def load_tokenizer(spec: VariantSpec):
    from transformers import AutoTokenizer

    path = resolve_ref(spec.model)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=spec.revision)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot load tokenizer of {spec.model!r}: {str(exc).splitlines()[0]}") from None
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_variant(spec: VariantSpec, device: str = "auto") -> LoadedModel:
    """Load ``spec``'s model (+ LoRA adapter via peft) and tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dtype = torch_dtype(spec.dtype)
    path = resolve_ref(spec.model)
    tok = load_tokenizer(spec)
    kwargs: dict = {"dtype": dtype, "revision": spec.revision}
    if dev.type == "cuda" and device == "auto":
        kwargs["device_map"] = "auto"  # accelerate spreads large models over the GPUs
    log.info("loading %s (%s%s)", spec.name, spec.model, f" + {spec.lora}" if spec.lora else "")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"cannot load model {spec.model!r}: {str(exc).splitlines()[0]}") from None
    if "device_map" not in kwargs:
        model.to(dev)
    if spec.lora:
        from peft import PeftModel

        adapter = resolve_ref(spec.lora, "lora adapter")
        if not Path(adapter).exists() and "/" not in adapter:
            raise PipelineError(f"bad lora {spec.lora!r}: expected a hub id or a local path")
        try:
            # its non-actionable warnings are filtered in trait_pipeline/__init__.py
            model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as exc:
            raise PipelineError(
                f"cannot load lora adapter {spec.lora!r}: {str(exc).splitlines()[0]}") from None
    model.eval()
    chat = bool(spec.use_chat_template) and bool(getattr(tok, "chat_template", None))
    if spec.use_chat_template and not chat:
        log.warning("variant %s asks for a chat template but the tokenizer has none", spec.name)
    if "device_map" in kwargs:
        dev = next(model.parameters()).device
    lm = LoadedModel(spec=spec, model=model, tokenizer=tok, device=dev, chat=chat)
    from .review.run_record import note_model

    note_model(lm)  # the job's snapshot records the device, dtype and weights actually used
    return lm
