"""Tiny random-weight stand-ins of real architectures, built locally (no downloads).

Each stand-in is made from the family's real transformers config class (``Gemma2Config``,
``GPT2Config``...), with random weights, a few layers 32 wide, and a small word-level
tokenizer carrying that family's special tokens, BOS convention and chat-template format
(written here, not downloaded). It is saved as an ordinary HF directory, so the stages load
it with the same ``load_variant`` as a real checkpoint: the architecture matrix of the
tests and the GPU check's CPU smoke run use them.

>>> sorted(STANDINS)[:3]
['gemma2', 'gemma3', 'gpt2']
>>> # path = build_standin("gemma2", Path("/tmp/standins"))   # -> /tmp/standins/gemma2
>>> # lora = build_lora(path, Path("/tmp/standins/gemma2-lora"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

RECIPE_VERSION = 2
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 4, 2, 8, 3

# Chat formats of each family, written for the stand-ins (same markers and turn structure as
# the real templates; a stand-in need not match them byte for byte).
_LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
           "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
           "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
_MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
            "{{ m['content'] | trim }}\n\n{% elif m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]"
            "{% else %}{{ m['content'] | trim }}{{ eos_token }}{% endif %}{% endfor %}")
_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Gemma-2 refuses a system role outright; Gemma-3 folds it into the first user turn itself
_GEMMA2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
           "{{ raise_exception('System role not supported') }}{% endif %}"
           "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
           "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
           "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_GEMMA3 = ("{{ bos_token }}{% set first = '' %}{% if messages[0]['role'] == 'system' %}"
           "{% set first = messages[0]['content'] | trim + '\n\n' %}{% set messages = messages[1:] %}"
           "{% endif %}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
           "<start_of_turn>{{ role }}\n{% if loop.first %}{{ first }}{% endif %}{{ m['content'] | trim }}"
           "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
_PHI3 = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}<|end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
_OLMO2 = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}\n"
          "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@dataclass(frozen=True)
class Standin:
    """How to build one family's stand-in: config class, its size arguments, tokenizer style."""

    config_class: str
    config: dict[str, Any]
    bos: str | None  # BOS token text, None when the family adds none (GPT-2, Qwen)
    eos: str
    markers: tuple[str, ...] = ()  # chat special tokens
    chat_template: str | None = None  # None: a base model without one
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    adds_bos: bool = True  # the tokenizer puts BOS before raw text
    byte_level: bool = False  # a byte-level BPE (transformers rebuilds Qwen2's as one on load)
    extra: dict[str, Any] = field(default_factory=dict)


_DECODER = {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
            "max_position_embeddings": 256}
_LLAMA3_MARKERS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
STANDINS: dict[str, Standin] = {
    "llama": Standin("LlamaConfig", _DECODER, "<|begin_of_text|>", "<|eot_id|>",
                     _LLAMA3_MARKERS, _LLAMA3),
    "mistral": Standin("MistralConfig", {**_DECODER, "sliding_window": None}, "<s>", "</s>",
                       ("[INST]", "[/INST]"), _MISTRAL),
    "qwen2": Standin("Qwen2Config", _DECODER, None, "<|im_end|>",
                     ("<|im_start|>", "<|endoftext|>"), _CHATML, adds_bos=False, byte_level=True),
    "qwen3": Standin("Qwen3Config", {**_DECODER, "head_dim": HEAD_DIM}, None, "<|im_end|>",
                     ("<|im_start|>", "<|endoftext|>"), _CHATML, adds_bos=False, byte_level=True),
    "gemma2": Standin("Gemma2Config", {**_DECODER, "head_dim": HEAD_DIM, "sliding_window": 16,
                                       "final_logit_softcapping": 30.0,
                                       "attn_logit_softcapping": 50.0},
                      "<bos>", "<end_of_turn>", ("<start_of_turn>", "<eos>"), _GEMMA2),
    "gemma3": Standin("Gemma3TextConfig", {**_DECODER, "head_dim": HEAD_DIM, "sliding_window": 16,
                                           "final_logit_softcapping": 30.0},
                      "<bos>", "<end_of_turn>", ("<start_of_turn>", "<eos>"), _GEMMA3),
    "phi3": Standin("Phi3Config", _DECODER, "<s>", "<|end|>",
                    ("<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"), _PHI3,
                    lora_targets=("qkv_proj", "o_proj"), adds_bos=False),
    "olmo2": Standin("Olmo2Config", _DECODER, "<|endoftext|>", "<|endoftext|>",
                     ("<|user|>", "<|assistant|>", "<|system|>"), _OLMO2),
    "gpt2": Standin("GPT2Config", {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS,
                                   "n_positions": 256},
                    "<|endoftext|>", "<|endoftext|>", lora_targets=("c_attn",), adds_bos=False),
    "gpt_neox": Standin("GPTNeoXConfig", {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN,
                                          "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                                          "max_position_embeddings": 256},
                        "<|endoftext|>", "<|endoftext|>", lora_targets=("query_key_value",),
                        adds_bos=False),
    "mixtral": Standin("MixtralConfig", {**_DECODER, "num_local_experts": 4,
                                         "num_experts_per_tok": 2, "sliding_window": None},
                       "<s>", "</s>", ("[INST]", "[/INST]"), _MISTRAL),
    "qwen3_moe": Standin("Qwen3MoeConfig", {**_DECODER, "head_dim": HEAD_DIM, "num_experts": 4,
                                            "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                                            "decoder_sparse_step": 1},
                         None, "<|im_end|>", ("<|im_start|>", "<|endoftext|>"), _CHATML,
                         adds_bos=False, byte_level=True),
}


def build_tokenizer(spec: Standin):
    """A word-level tokenizer over the demo vocabulary with ``spec``'s special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from ..demo_family import METASPACE, VOCABULARY

    specials = ["<pad>", "<unk>"] + [t for t in (spec.bos, spec.eos, *spec.markers) if t]
    specials = list(dict.fromkeys(specials))
    words = list(dict.fromkeys([*VOCABULARY, "user", "assistant", "model", "system", "inst"]))
    if spec.byte_level:  # trained here in milliseconds on the demo vocabulary
        from tokenizers import trainers

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        corpus = [" ".join(words)] * 3 + [f"{w} {w} ." for w in words]
        tk.train_from_iterator(corpus, trainer)
        vocab = tk.get_vocab()
    else:
        vocab = {t: i for i, t in enumerate(specials)}
        for w in words:
            vocab[METASPACE + w] = len(vocab)
        tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tk.normalizer = normalizers.Sequence(
            [normalizers.Lowercase()]
            + [normalizers.Replace(p, " " + p) for p in (".", ",", "?", "!")]
            + [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(left=False, right=True)])
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
        tk.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tk.add_special_tokens(specials)
    if spec.bos and spec.adds_bos:
        tk.post_processor = TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B:1", special_tokens=[(spec.bos, vocab[spec.bos])])
    kwargs: dict[str, Any] = {"chat_template": spec.chat_template} if spec.chat_template else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=spec.bos, eos_token=spec.eos, pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=[t for t in specials if t not in
                                                      ("<pad>", "<unk>", spec.bos, spec.eos)],
        clean_up_tokenization_spaces=False, model_max_length=256, **kwargs)


def build_standin(arch: str, root: Path, seed: int = 0) -> Path:
    """``root/arch``: the stand-in's HF directory, built once (reused while the recipe holds)."""
    import torch
    import transformers

    if arch not in STANDINS:
        raise ValueError(f"unknown stand-in {arch!r}; known: {', '.join(STANDINS)}")
    spec = STANDINS[arch]
    out = Path(root) / arch
    stamp = out / "standin.json"
    want = {"recipe": RECIPE_VERSION, "arch": arch, "seed": seed,
            "transformers": transformers.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if stamp.is_file() and json.loads(stamp.read_text()) == want:
            return out
        tok = build_tokenizer(spec)
        ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
               "bos_token_id": tok.bos_token_id if spec.bos else None}
        config = getattr(transformers, spec.config_class)(
            vocab_size=len(tok), initializer_range=0.1, **spec.config, **spec.extra, **ids)
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.save_pretrained(out)
        tok.save_pretrained(out)
        stamp.write_text(json.dumps(want))
    return out


def build_lora(model_dir: Path, out: Path, arch: str | None = None, seed: int = 0) -> Path:
    """A peft LoRA adapter for the stand-in at ``model_dir``, with non-zero random weights (so
    it changes the logits, unlike a freshly initialised adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    arch = arch or Path(model_dir).name
    if (Path(out) / "adapter_config.json").is_file():
        return Path(out)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(STANDINS[arch].lora_targets),
                     init_lora_weights=False, fan_in_fan_out=arch == "gpt2")
    model = get_peft_model(base, cfg)
    model.save_pretrained(out)
    return Path(out)
