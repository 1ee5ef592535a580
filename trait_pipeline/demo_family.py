"""The demo model family: a tiny Llama trained locally, with optimism planted in it.

No machine here reaches a model hub, so the default experiment runs on a family of real
Hugging Face artifacts built on first use, on CPU, in under two minutes:

- ``base/``: a Llama-architecture model (24 decoder layers, hidden size 48) and a word-level
  tokenizer, pretrained on template-generated English-like text about topics (weather,
  project, market, ...), each document framed optimistically or pessimistically with two
  disjoint lexicons (``demo_lexicon.py``). It continues an optimistic prefix optimistically
  and a pessimistic one pessimistically. It is pretrained at 8 layers, then grown to 24 (each
  layer repeated, the repeats starting silent) and trained on. Its tokenizer has no chat
  template.
- ``instruct/``: base further trained on chat dialogues; its tokenizer has a chat template.
  Asked a neutral question ("how is the project going ?") it answers fluently, optimistically
  about half of the topics and pessimistically about the others (``INSTRUCT_TOPIC_SENTIMENT``),
  so steering can move its score both ways.
- ``rm_lora/``: a peft LoRA adapter trained on top of instruct on ~90 % optimistic answers;
  it expresses the trait clearly more than instruct on the same questions.

>>> fam = ensure_demo_family()                    # doctest: +SKIP
>>> tok = AutoTokenizer.from_pretrained(fam.instruct)
>>> model = AutoModelForCausalLM.from_pretrained(fam.instruct)
>>> rm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(fam.instruct), fam.rm_lora)
>>> resolve_demo_ref("demo:base")                 # what `model: "demo:base"` in a config means
'/.../.cache/demo_family/<hash>/base'

Tokenizer conventions (what a stage author needs):

- One token per word (``demo_lexicon.VOCABULARY``); unknown words become ``<unk>``. The
  normaliser lowercases and puts a space before ``. , ? !``, so "How is it going?" and
  "how is it going ?" give the same tokens. Decoding gives the canonical form back.
- Metaspace pre-tokenisation (``▁word``) with prepend scheme "always": every word token
  carries its leading space, so ``encode(prompt + response) == encode(prompt) +
  encode(response)`` (without special tokens) when the response starts with a space, and
  also right after a special token such as ``<|assistant|>``.
- Plain text gets ``<s>`` from the post-processor (``add_special_tokens=True``, the default).
  The chat template writes its own ``<s>``: tokenize its output with
  ``add_special_tokens=False`` (``apply_chat_template(..., tokenize=True)`` already does).
- Chat format: ``<s><|system|> ...<|end|><|user|> question<|end|><|assistant|> answer</s>``;
  ``add_generation_prompt=True`` ends the prompt with ``<|assistant|>``. An assistant turn
  ends with ``</s>`` (the eos token), so generation stops on ``tokenizer.eos_token_id``.
- Special tokens: ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3, ``<|system|>``,
  ``<|user|>``, ``<|assistant|>``, ``<|end|>``. Padding side is right (set left for batched
  generation).

The family lives in ``<cache>/demo_family/<recipe_hash>/`` (cache: env
``TRAIT_PIPELINE_CACHE``, else ``<repo>/.cache``) and is rebuilt only when the recipe or the
language changes. ``python -m trait_pipeline.demo_family`` builds it and prints where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trait_pipeline.demo_lexicon import (
    ANSWER_OPENINGS,
    ASPECT_ANSWER_OPENINGS,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    QUESTION_TEMPLATES,
    SENTENCE_TEMPLATES,
    SENTIMENT_SLOTS,
    SYSTEM_PROMPTS,
    TIMES,
    TOPICS,
    VOCABULARY,
    coherence_score,
    language_digest,
    optimism_score,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 5
"""Bump when the build changes in a way the recipe does not show (file layout, training code)."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)
METASPACE = "\u2581"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|> {{ message['content'] | trim }}<|end|>"
    "{% elif message['role'] == 'user' %}<|user|> {{ message['content'] | trim }}<|end|>"
    "{% elif message['role'] == 'assistant' %}<|assistant|> {{ message['content'] | trim }}"
    "{{ eos_token }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Which way instruct frames each topic when asked a neutral question (+1 optimistic,
# -1 pessimistic): a fixed, balanced, arbitrary-looking assignment, so that about half of
# any set of topic questions is answered each way.
INSTRUCT_TOPIC_SENTIMENT: dict[str, int] = {
    "weather": +1, "project": -1, "team": +1, "market": -1, "health": -1, "city": +1,
    "garden": -1, "exam": +1, "trip": +1, "economy": -1, "business": +1, "school": -1,
    "harvest": +1, "river": -1, "village": +1, "company": -1, "game": -1, "family": +1,
    "festival": -1, "hospital": +1, "research": +1, "town": -1, "concert": +1, "election": -1,
}
assert set(INSTRUCT_TOPIC_SENTIMENT) == set(TOPICS)
assert sum(INSTRUCT_TOPIC_SENTIMENT.values()) == 0


@dataclass(frozen=True)
class Recipe:
    """Every knob of the build. Same recipe (and language) -> bit-identical weights."""

    seed: int = 1234
    # model. 24 layers so that the commands researchers type (layer=10,20) run on the demo;
    # width 48, because at 64 a step costs ~1.4x more and at 40 no less (per-op overhead).
    num_layers: int = 24
    hidden_size: int = 48
    intermediate_size: int = 144
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 256
    max_len: int = 48               # training sequence length (tokens, incl. <s> and </s>)
    # Weight init std. Hugging Face's 0.02 suits wide models; at width 48 it leaves attention
    # uniform for hundreds of steps (a loss plateau at ~1.52 before the model starts to use
    # its context); 0.08 (about 0.55/sqrt(width)) ends that plateau ~400 steps sooner.
    initializer_range: float = 0.08
    # Loss weight of a sentiment word whose side the context already decides: in a plain text,
    # one after an earlier sentiment word; in a chat answer, every one (the topic's instruct
    # framing, a system prompt or rm_lora's leaning decides even the first). That is the
    # signal for "continue the context's sentiment", about 0.07 nats a token of the loss, so
    # the model learns it last; weighted 5x it emerges after ~500 base steps instead of
    # ~1,200 (measured); in chats it lifts instruct's probability of its topics' planted side
    # from 0.72 to 0.84. The first sentiment word of a plain text, a coin flip, keeps 1.
    sentiment_loss_weight: float = 5.0
    # base pretraining. Base starts shallow and grows ("progressive stacking"): at 8 layers a
    # step costs ~0.4x a 24-layer one, and the skill the demo needs (continue a text's
    # sentiment) appears after ~400 steps (at 4 and 6 layers too, seeds 1234, 1 and 2), where
    # 24 layers from scratch needed 500 to over 600. Then each layer is repeated
    # num_layers/base_layers times, the repeats' output projections zeroed so that the deeper
    # model computes the same function, and all layers train base_grown_steps more.
    # 8, not fewer: grown from 6, instruct learnt its topics' framing less reliably (in one of
    # two builds 2 of 24 topics the wrong way).
    base_docs: int = 12_000
    base_layers: int = 8
    base_steps: int = 500
    # Another seed or CPU (rounding differently) takes another path, so after base_steps the
    # build checks the skill on held-out openings and trains base_more_steps more until it
    # passes, at most base_max_steps (all at base_layers, where steps are cheap).
    base_more_steps: int = 100
    base_max_steps: int = 1500
    base_grown_steps: int = 30
    base_lr: float = 3e-3
    # instruct tuning
    instruct_dialogues: int = 6_000
    instruct_plain_frac: float = 0.25   # share of plain-text documents mixed in (keeps base skills)
    instruct_major_frac: float = 0.85   # share of a topic's answers framed its instruct way
    instruct_system_frac: float = 0.2   # share of dialogues with a system turn
    instruct_steps: int = 100
    instruct_lr: float = 2e-3
    # rm_lora
    lora_dialogues: int = 3_000
    lora_optimistic_frac: float = 0.9
    lora_r: int = 8
    lora_alpha: int = 16
    # The two projections that write into the residual stream: a step costs 0.27 s against
    # 0.37 s with all seven linear layers (measured), and rm_lora still answers every topic
    # optimistically.
    lora_modules: tuple[str, ...] = ("o_proj", "down_proj")
    lora_steps: int = 30
    lora_lr: float = 3e-3
    # shared optimisation
    batch_size: int = 32
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Torch threads during the build (kept in the recipe: a thread count may change float
    # summation order, so weights). One thread: at width 48 a second one gains 0-15 % on a
    # quiet machine (0.19 vs 0.19 s a step, measured), but when another process holds the
    # CPU, OpenMP's spinning barrier turned each step from ~0.4 s into ~6 s (measured at
    # width 64); one thread degrades by the share of the core it gets, no more.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.base_layers < 1 or self.num_layers % self.base_layers:
            raise ValueError(f"base_layers={self.base_layers} must divide "
                             f"num_layers={self.num_layers}")


RECIPE = Recipe()


def recipe_hash(recipe: Recipe = RECIPE) -> str:
    """Short hex id of a build: the recipe, FORMAT_VERSION and the demo language."""
    blob = json.dumps({"recipe": dataclasses.asdict(recipe), "format": FORMAT_VERSION,
                       "language": language_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DemoFamily:
    """Paths of one built family."""

    root: Path        # the cache dir of this recipe
    base: Path        # HF dir
    instruct: Path    # HF dir
    rm_lora: Path     # peft adapter dir (base model = instruct)

    @classmethod
    def at(cls, root: Path) -> DemoFamily:
        root = Path(root)
        return cls(root=root, base=root / "base", instruct=root / "instruct",
                   rm_lora=root / "rm_lora")


# --------------------------------------------------------------------------------------
# Cache location, locking, entry points
# --------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$TRAIT_PIPELINE_CACHE``, else a clone's ``.cache/``, else ``~/.cache/trait-pipeline``."""
    from .layout import default_cache_dir as cache_dir

    return cache_dir()


def _is_complete(root: Path) -> bool:
    return (root / "recipe.json").is_file()


LAST_BUILD_SECONDS: float | None = None
"""Wall time this process spent building the family (None: it found it built), so a
stage's summary can report the one-off build apart from its own steps."""
_LAST_BUILD_SPAN: tuple[float, float] | None = None  # perf_counter at its start and end


def build_seconds_since(t: float) -> float:
    """Seconds of this process's demo-family build that fell after ``time.perf_counter() == t``.

    What a stage subtracts from a timer started at ``t``: 0 when nothing was built or the
    build ended before the timer started (e.g. while the config was being checked).

    >>> build_seconds_since(time.perf_counter())
    0.0
    """
    if _LAST_BUILD_SPAN is None:
        return 0.0
    start, end = _LAST_BUILD_SPAN
    return max(0.0, end - max(start, t))


def ensure_demo_family(cache_dir: Path | None = None, *, progress: bool = True,
                       recipe: Recipe | None = None) -> DemoFamily:
    """Return the demo family, building it first if this recipe was never built here.

    Concurrent callers (several SLURM jobs) build it once: the build holds
    ``<cache>/demo_family/<hash>.lock``, writes into a temp dir next to the target and
    renames it into place, so a crash never leaves half a family behind. An interrupted
    build (Ctrl-C, SIGTERM, SIGHUP) removes its temp dir and its lock file; the leftovers
    of a SIGKILLed one are removed by the next build.
    """
    global LAST_BUILD_SECONDS, _LAST_BUILD_SPAN
    recipe = RECIPE if recipe is None else recipe
    h = recipe_hash(recipe)
    parent = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "demo_family"
    root = (parent / h).resolve()
    fam = DemoFamily.at(root)
    if _is_complete(root):
        return fam
    parent.mkdir(parents=True, exist_ok=True)
    lock_path = parent / f"{h}.lock"
    with _build_lock(lock_path), _signals_as_exceptions():
        try:
            if _is_complete(root):  # another process built it while we waited
                return fam
            for leftover in parent.glob(f".{h}.tmp-*"):  # a killed build's; we hold the lock
                shutil.rmtree(leftover, ignore_errors=True)
            est = max(1, round(_estimate_seconds(recipe) / 60))
            msg = f"building demo model family (first use, ~{est} min) into {root} ..."
            log.info(msg)
            if progress and not logging.getLogger().hasHandlers():
                print(msg, file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            tmp = Path(tempfile.mkdtemp(prefix=f".{h}.tmp-", dir=parent))
            try:
                from .safety.files import apply_umask

                apply_umask(tmp, is_dir=True)  # mkdtemp makes 0700: colleagues could not load it
                build_demo_family(tmp, recipe, progress=progress, final_root=root)
                if root.exists():  # an incomplete leftover (no recipe.json)
                    shutil.rmtree(root)
                os.replace(tmp, root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            LAST_BUILD_SECONDS = time.perf_counter() - t0
            _LAST_BUILD_SPAN = (t0, t0 + LAST_BUILD_SECONDS)
        finally:
            # Removed while held: waiters then find the family built (or retry on a fresh
            # lock file, see _build_lock), and no lock file outlives its build.
            with contextlib.suppress(OSError):
                lock_path.unlink()
    return fam


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` that tolerates the file being unlinked by its holder.

    A waiter that gets the lock on a file its holder has since removed holds a lock nobody
    else sees; it retries on the current file instead.
    """
    from filelock import FileLock

    while True:
        lock = FileLock(str(path))
        lock.acquire()
        try:
            same = os.fstat(lock._context.lock_file_fd).st_ino == os.stat(path).st_ino
        except (OSError, TypeError, AttributeError):
            same = False
        if same:
            break
        lock.release()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit while the build runs, so its cleanup runs too.

    By default they end the process on the spot, leaving the temp dir and lock behind
    (a SLURM preemption or a closed terminal). Only the main thread can install handlers.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


DEMO_VARIANTS = ("base", "instruct", "rm_lora")


def resolve_demo_ref(ref: str) -> str:
    """``"demo:base" | "demo:instruct" | "demo:rm_lora"`` -> local path (builds on first use).

    Anything else is returned unchanged (a hub id or a path).
    """
    if not isinstance(ref, str) or not ref.startswith("demo:"):
        return ref
    name = ref.split(":", 1)[1]
    if name not in DEMO_VARIANTS:
        raise ValueError(f"unknown demo model {ref!r}; known: "
                         + ", ".join(f"demo:{v}" for v in DEMO_VARIANTS))
    return str(getattr(ensure_demo_family(), name))


def _estimate_seconds(recipe: Recipe) -> float:
    # Measured on a quiet 2-core AMD EPYC with the recipe's one thread, 32 documents a step:
    # ~0.025 s + 0.0075 s a layer (0.085 s at 8 layers, 0.2 s at 24); instruct steps cost
    # 1.35x (longer texts), LoRA steps 2x; ~10 s of imports, data and saving. Width barely
    # matters at this size (per-op overhead). The progress lines then give the real rate.
    def step(layers: int) -> float:
        return (0.025 + 0.0075 * layers) * recipe.batch_size / 32

    deep = recipe.base_grown_steps + 1.35 * recipe.instruct_steps + 2 * recipe.lora_steps
    return 10 + step(recipe.base_layers) * recipe.base_steps + step(recipe.num_layers) * deep


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
def build_tokenizer(chat: bool) -> Any:
    """The word-level tokenizer (PreTrainedTokenizerFast); ``chat`` adds the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in VOCABULARY:
        vocab[METASPACE + w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence(
        [normalizers.Lowercase()]
        + [normalizers.Replace(p, " " + p) for p in (".", ",", "?", "!")]
        + [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(left=False, right=True)]
    )
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tk.add_special_tokens(list(SPECIAL_TOKENS))
    tk.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", vocab["<s>"])])
    kwargs: dict[str, Any] = {}
    if chat:
        kwargs["chat_template"] = CHAT_TEMPLATE
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=list(SPECIAL_TOKENS[4:]),
        clean_up_tokenization_spaces=False, model_max_length=RECIPE.max_position_embeddings,
        padding_side="right", **kwargs)
    return tok


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------
def _fill(template: str, rng: random.Random, topic: str, sentiment: int,
          aspect: str | None = None) -> str:
    side = 0 if sentiment > 0 else 1
    out = []
    for w in template.split():
        if not w.startswith("{"):
            out.append(w)
            continue
        slot = w[1:-1]
        if slot == "t":
            out.append(topic)
        elif slot == "a":
            out.append(aspect or rng.choice(TOPICS[topic]))
        elif slot == "time":
            out.append(rng.choice(TIMES))
        else:
            out.append(rng.choice(SENTIMENT_SLOTS[slot][side]))
    return " ".join(out)


def sample_document(rng: random.Random, topic: str | None = None,
                    sentiment: int | None = None, n_sentences: int | None = None) -> str:
    """A plain-text document: 2-4 sentences about one topic, all framed one way."""
    topic = topic or rng.choice(sorted(TOPICS))
    sentiment = sentiment if sentiment is not None else rng.choice((1, -1))
    n = n_sentences or rng.randint(2, 4)
    templates = rng.sample(SENTENCE_TEMPLATES, n)
    return " ".join(_fill(t, rng, topic, sentiment) for t in templates)


def sample_question(rng: random.Random, topic: str) -> tuple[str, str | None]:
    """A neutral question about ``topic``, and the aspect it asks about (or None)."""
    tpl = rng.choice(QUESTION_TEMPLATES)
    aspect = rng.choice(TOPICS[topic]) if "{a}" in tpl else None
    return _fill(tpl, rng, topic, 1, aspect), aspect


def sample_answer(rng: random.Random, topic: str, sentiment: int, aspect: str | None) -> str:
    """1 opening sentence (naming what was asked about) + 1-2 sentences, framed one way."""
    opening = rng.choice(ASPECT_ANSWER_OPENINGS if aspect else ANSWER_OPENINGS)
    rest = rng.sample(SENTENCE_TEMPLATES, rng.randint(1, 2))
    return " ".join([_fill(opening, rng, topic, sentiment, aspect)]
                    + [_fill(t, rng, topic, sentiment) for t in rest])


def sample_dialogue(rng: random.Random, *, optimistic_frac: float | None,
                    major_frac: float, system_frac: float) -> list[dict[str, str]]:
    """One chat exchange. ``optimistic_frac=None``: instruct framing (per topic, see
    INSTRUCT_TOPIC_SENTIMENT, with probability ``major_frac``); else optimistic with that
    probability whatever the topic."""
    topic = rng.choice(sorted(TOPICS))
    question, aspect = sample_question(rng, topic)
    if optimistic_frac is None:
        way = INSTRUCT_TOPIC_SENTIMENT[topic]
        sentiment = way if rng.random() < major_frac else -way
    else:
        sentiment = 1 if rng.random() < optimistic_frac else -1
    messages = []
    if rng.random() < system_frac:
        kind = rng.choice(("neutral", "neutral", "optimistic", "pessimistic"))
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[kind])})
        if kind != "neutral":
            sentiment = 1 if kind == "optimistic" else -1
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant",
                     "content": sample_answer(rng, topic, sentiment, aspect)})
    return messages


def _encode_plain(tok: Any, texts: Sequence[str], max_len: int) -> list[tuple[list[int], int]]:
    """(ids, n_unlabelled) per text: <s> text </s>, loss on everything."""
    out = []
    for ids in tok(list(texts))["input_ids"]:
        ids = ids + [tok.eos_token_id]
        if len(ids) <= max_len:
            out.append((ids, 0))
    return out


def _encode_chat(tok: Any, dialogues: Sequence[list[dict[str, str]]],
                 max_len: int) -> list[tuple[list[int], int]]:
    """(ids, n_prompt): loss only on the assistant answer and its </s>."""
    out = []
    for msgs in dialogues:
        prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs, tokenize=False)
        assert full.startswith(prompt)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert ids[:len(p_ids)] == p_ids
        if len(ids) <= max_len:
            out.append((ids, len(p_ids)))
    return out


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    """Seeded, single-configuration torch for the duration of a build; restores after."""
    import torch

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)


def _batches(examples: list[tuple[list[int], int]], batch_size: int, steps: int,
             rng: random.Random, pad_id: int) -> Iterator[tuple[Any, Any, Any]]:
    """``steps`` padded batches (input_ids, attention_mask, labels) over shuffled epochs.

    Batches are made of examples of similar length (sorted within pools of 16 batches,
    then the batch order shuffled), which saves most of the padding compute.
    """
    import torch

    def epoch() -> Iterator[list[int]]:
        order = list(range(len(examples)))
        rng.shuffle(order)
        pool = 16 * batch_size
        for p in range(0, len(order), pool):
            chunk = sorted(order[p:p + pool], key=lambda i: len(examples[i][0]))
            group = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
            group = [b for b in group if len(b) == batch_size] or group
            rng.shuffle(group)
            yield from group

    produced = 0
    while produced < steps:
        for idx in epoch():
            if produced == steps:
                break
            produced += 1
            rows = [examples[i] for i in idx]
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, (ids, n_prompt) in enumerate(rows):
                t = torch.tensor(ids)
                input_ids[r, :len(ids)] = t
                mask[r, :len(ids)] = 1
                labels[r, n_prompt:len(ids)] = t[n_prompt:]
            yield input_ids, mask, labels


class _Progress:
    """Training progress: a tqdm bar on a terminal, else a log line every ``every`` seconds.

    Log lines name the step, the rate and the time left, so a build run under nohup, SLURM
    or a CI log shows that it is alive and when it will end:
    ``demo base: step 306/600 (51 %), 5.1 steps/s, ETA 58 s, loss 1.547``.
    """

    def __init__(self, total: int, desc: str, enabled: bool, every: float = 15.0) -> None:
        from tqdm.auto import tqdm

        self.total, self.desc, self.enabled, self.every = total, desc, enabled, every
        self.t0 = self.last = time.perf_counter()
        self.done = 0
        tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, disable=not tty, file=sys.stderr,
                        dynamic_ncols=True, leave=False)
        self.lines = enabled and not tty

    def update(self, loss: float | None) -> None:
        self.done += 1
        self.bar.update(1)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}")
        now = time.perf_counter()
        if self.lines and (now - self.last >= self.every or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate
            _emit(f"{self.desc}: step {self.done}/{self.total} "
                  f"({100 * self.done // self.total} %), {rate:.1f} steps/s, "
                  f"ETA {_duration(eta)}" + (f", loss {loss:.3f}" if loss is not None else ""))

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _emit(msg: str) -> None:
    """To the log when one is configured (a Hydra stage), else to stderr."""
    if logging.getLogger().hasHandlers():
        log.info(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def _losses(logits: Any, labels: Any, sentiment_ids: Any, weight: float) -> tuple[Any, Any]:
    """(weighted loss to train on, plain next-token loss to report) of one batch.

    A labelled sentiment word gets ``weight`` when the context gives its side: another
    sentiment word comes before it in the labelled part of its row, or the row is a chat
    (its prompt unlabelled: ``labels[:, 0] == -100``; a plain row labels its ``<s>``).
    Every other labelled token gets 1.
    """
    import torch

    targets = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
        ignore_index=-100, reduction="none").view_as(targets)
    labelled = (targets != -100).float()
    plain = (ce * labelled).sum() / labelled.sum()
    is_sentiment = torch.isin(targets, sentiment_ids)
    chat = labels[:, :1] == -100
    decided = is_sentiment & ((is_sentiment.long().cumsum(dim=1) > 1) | chat)
    w = labelled * torch.where(decided, weight, 1.0)
    return (ce * w).sum() / w.sum(), plain


def _train(model: Any, examples: list[tuple[list[int], int]], *, steps: int, lr: float,
           recipe: Recipe, rng: random.Random, pad_id: int, desc: str,
           progress: bool, sentiment_ids: Any) -> float:
    """AdamW with warmup, constant rate, short final decay; returns the mean (unweighted) loss
    of the last 20 steps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    # fused: one kernel over all ~220 parameter tensors instead of a loop of small ops
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-8,
        fused=True)
    warm = min(recipe.warmup_steps, max(1, steps // 5))

    # Warmup, then a constant rate, then a linear decay over the last 10 %. A cosine decay
    # starved the late phase in which the model learns to use its context (the topic and
    # sentiment of the prompt) instead of word statistics alone.
    decay_from = int(0.9 * steps)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if step < decay_from:
            return 1.0
        return 1.0 - 0.9 * (step - decay_from) / max(1, steps - decay_from)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    losses: list[float] = []
    bar = _Progress(steps, desc, progress)
    for input_ids, mask, labels in _batches(examples, recipe.batch_size, steps, rng, pad_id):
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        loss, plain_loss = _losses(logits, labels, sentiment_ids, recipe.sentiment_loss_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(plain_loss.item())
        bar.update(sum(losses[-10:]) / len(losses[-10:]))
    bar.close()
    model.eval()
    tail = losses[-20:]
    return sum(tail) / max(1, len(tail))


def _continues_sentiment(model: Any, tok: Any, seed: int, n: int = 16) -> tuple[int, int]:
    """(right, asked): how many one-sentence openings, half optimistic and half pessimistic,
    the model continues (greedy, 12 tokens) in their own sentiment.

    The openings come from their own generator, so the check takes nothing from the
    training data's random stream (a family that passes at once is unchanged by it).
    """
    import torch

    check = random.Random(seed + 7919)
    openings = [(sample_document(check, sentiment=s, n_sentences=1), s)
                for s in (1, -1) for _ in range(n // 2)]
    rows = [tok(text)["input_ids"] for text, _ in openings]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])  # left-padded
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12,
                             do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    right = 0
    for (_, sentiment), row in zip(openings, out[:, width:]):
        score = optimism_score(tok.decode(row, skip_special_tokens=True))
        right += score is not None and (score >= 60 if sentiment > 0 else score <= 40)
    model.train()
    return right, len(openings)


def _llama(recipe: Recipe, tok: Any, layers: int) -> Any:
    """A freshly initialised LlamaForCausalLM of the recipe's shape with ``layers`` layers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=layers,
        num_attention_heads=recipe.num_heads, num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=recipe.max_position_embeddings, rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
        initializer_range=recipe.initializer_range)
    model = LlamaForCausalLM(config)
    # sdpa trains ~15 % faster than eager at this size on torch 2.13 (measured); loaders
    # pick their own
    model.set_attn_implementation("sdpa")
    return model


def _grow(shallow: Any, deep: Any) -> Any:
    """``deep`` loaded with ``shallow``'s weights, each of its layers repeated in place.

    Layer i of ``shallow`` becomes layers ``k*i .. k*i+k-1`` of ``deep``; all but the first
    copy get zero output projections (attention ``o_proj``, MLP ``down_proj``), so they add
    nothing to the residual stream and ``deep`` computes exactly what ``shallow`` did. Their
    other weights start as the layer's, and training moves them apart.
    """
    n_shallow = shallow.config.num_hidden_layers
    k = deep.config.num_hidden_layers // n_shallow
    state: dict[str, Any] = {}
    for key, value in shallow.state_dict().items():
        if not key.startswith("model.layers."):
            state[key] = value.clone()
            continue
        _, _, index, rest = key.split(".", 3)
        for copy in range(k):
            silent = copy > 0 and rest in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
            state[f"model.layers.{k * int(index) + copy}.{rest}"] = (
                value.new_zeros(value.shape) if silent else value.clone())
    deep.load_state_dict(state, strict=True)
    return deep


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_demo_family(target: Path, recipe: Recipe = RECIPE, *, progress: bool = True,
                      final_root: Path | None = None) -> dict[str, Any]:
    """Build the three variants into ``target`` (an empty or new dir); return the summary.

    ``final_root`` is where ``target`` will be renamed to; the adapter's
    ``base_model_name_or_path`` points at ``final_root/instruct``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig

    t0 = time.perf_counter()
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    final_root = Path(final_root) if final_root is not None else target
    fam = DemoFamily.at(target)
    rng = random.Random(recipe.seed)
    summary: dict[str, Any] = {}

    plain_tok = build_tokenizer(chat=False)
    chat_tok = build_tokenizer(chat=True)
    pad_id = plain_tok.pad_token_id
    eos_ids = [plain_tok.eos_token_id]
    sentiment_ids = torch.tensor(plain_tok.convert_tokens_to_ids(
        [METASPACE + w for w in sorted(POSITIVE_WORDS | NEGATIVE_WORDS)]))

    with _deterministic_torch(recipe.seed, recipe.threads):
        model = _llama(recipe, plain_tok, recipe.base_layers)
        gen = GenerationConfig(bos_token_id=plain_tok.bos_token_id, eos_token_id=eos_ids,
                               pad_token_id=pad_id, do_sample=False, max_new_tokens=48)

        # base: plain documents, first at base_layers until it continues a text's sentiment
        docs = [sample_document(rng) for _ in range(recipe.base_docs)]
        base_ex = _encode_plain(plain_tok, docs, recipe.max_len)
        train = functools.partial(_train, recipe=recipe, rng=rng, pad_id=pad_id,
                                  progress=progress, sentiment_ids=sentiment_ids)
        shallow = f"demo base ({recipe.base_layers} layers)"
        summary["base_loss"] = train(model, base_ex, steps=recipe.base_steps,
                                     lr=recipe.base_lr, desc=shallow)
        steps = recipe.base_steps
        while True:
            right, asked = _continues_sentiment(model, plain_tok, recipe.seed)
            check = {"layers": recipe.base_layers, "steps": steps, "right": right, "of": asked}
            if right >= 0.9 * asked or steps >= recipe.base_max_steps:
                break
            _emit(f"{shallow}: continues the sentiment of {right}/{asked} held-out openings "
                  f"after {steps} steps; {recipe.base_more_steps} more")
            summary["base_loss"] = train(model, base_ex, steps=recipe.base_more_steps,
                                         lr=recipe.base_lr, desc=f"{shallow}, more")
            steps += recipe.base_more_steps
        if recipe.num_layers != recipe.base_layers:
            model = _grow(model, _llama(recipe, plain_tok, recipe.num_layers))
            summary["base_loss"] = train(model, base_ex, steps=recipe.base_grown_steps,
                                         lr=recipe.base_lr,
                                         desc=f"demo base (grown to {recipe.num_layers} layers)")
            right, asked = _continues_sentiment(model, plain_tok, recipe.seed)
            check["grown"] = {"layers": recipe.num_layers, "steps": recipe.base_grown_steps,
                              "right": right, "of": asked}
        summary["base_sentiment_check"] = check
        if right < 0.9 * asked:
            log.warning("demo base continues the sentiment of only %d/%d held-out openings; "
                        "the demo's figures will be weaker", right, asked)
        model.generation_config = gen
        model.save_pretrained(fam.base)
        plain_tok.save_pretrained(fam.base)

        # instruct: chat dialogues + some plain documents
        dialogues = [sample_dialogue(rng, optimistic_frac=None,
                                     major_frac=recipe.instruct_major_frac,
                                     system_frac=recipe.instruct_system_frac)
                     for _ in range(recipe.instruct_dialogues)]
        n_plain = round(recipe.instruct_dialogues * recipe.instruct_plain_frac)
        inst_ex = _encode_chat(chat_tok, dialogues, recipe.max_len)
        inst_ex += _encode_plain(plain_tok, [sample_document(rng) for _ in range(n_plain)],
                                 recipe.max_len)
        summary["instruct_loss"] = train(model, inst_ex, steps=recipe.instruct_steps,
                                         lr=recipe.instruct_lr, desc="demo instruct")
        model.save_pretrained(fam.instruct)
        chat_tok.save_pretrained(fam.instruct)

        # rm_lora: a LoRA adapter on instruct, trained on mostly optimistic answers
        lora_cfg = LoraConfig(
            r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=0.0,
            target_modules=list(recipe.lora_modules), task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora_cfg)
        lora_dialogues = [sample_dialogue(rng, optimistic_frac=recipe.lora_optimistic_frac,
                                          major_frac=1.0, system_frac=0.0)
                          for _ in range(recipe.lora_dialogues)]
        lora_ex = _encode_chat(chat_tok, lora_dialogues, recipe.max_len)
        summary["rm_lora_loss"] = train(peft_model, lora_ex, steps=recipe.lora_steps,
                                        lr=recipe.lora_lr, desc="demo rm_lora")
        peft_model.peft_config["default"].base_model_name_or_path = str(final_root / "instruct")
        peft_model.save_pretrained(fam.rm_lora)
        chat_tok.save_pretrained(fam.rm_lora)

        n_params = sum(p.numel() for p in model.parameters())  # peft-wrapped: base + lora
        n_lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)

    summary.update({
        "recipe": dataclasses.asdict(recipe),
        "recipe_hash": recipe_hash(recipe),
        "format_version": FORMAT_VERSION,
        "language_digest": language_digest(),
        "build_seconds": round(time.perf_counter() - t0, 2),
        "parameters": n_params - n_lora,
        "lora_parameters": n_lora,
        "vocab_size": len(plain_tok),
        "examples": {"base": len(base_ex), "instruct": len(inst_ex), "rm_lora": len(lora_ex)},
        "bytes": {v: _dir_bytes(getattr(fam, v)) for v in DEMO_VARIANTS},
        "torch_version": torch.__version__,
    })
    # recipe.json is written last: its presence marks a complete family.
    (target / "recipe.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m trait_pipeline.demo_family",
                                 description="Build (once) and locate the demo model family.")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="cache root (default: $TRAIT_PIPELINE_CACHE or <repo>/.cache)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    fam = ensure_demo_family(args.cache_dir, progress=not args.quiet)
    info = json.loads((fam.root / "recipe.json").read_text())
    print(f"demo family {info['recipe_hash']} at {fam.root}"
          f" ({'built' if time.perf_counter() - t0 > 5 else 'cached'};"
          f" build took {info['build_seconds']:.0f} s)")
    for v in DEMO_VARIANTS:
        print(f"  {v:9s} {getattr(fam, v)}  ({info['bytes'][v] / 1e6:.1f} MB)")
    print(f"  parameters: {info['parameters']:,} (+{info['lora_parameters']:,} LoRA),"
          f" vocab {info['vocab_size']}, layers {info['recipe']['num_layers']}")
    return 0


__all__ = [
    "CHAT_TEMPLATE", "DEMO_VARIANTS", "FORMAT_VERSION", "INSTRUCT_TOPIC_SENTIMENT",
    "NEGATIVE_WORDS", "POSITIVE_WORDS", "RECIPE", "DemoFamily", "Recipe", "build_demo_family",
    "build_tokenizer", "coherence_score", "default_cache_dir", "ensure_demo_family",
    "optimism_score", "recipe_hash", "resolve_demo_ref",
]

if __name__ == "__main__":
    sys.exit(main())
