"""HTTP endpoints of the live chat, mounted by :mod:`trait_pipeline.serve`.

| endpoint | does |
|---|---|
| ``GET /api/chat/status`` | settings (``max_new_tokens`` cap, ``max_resident``) and the pool: resident models with their memory, queues |
| ``GET /api/chat/{exp}`` | the experiment's variants (model, adapter, memory estimate), traits with vectors, calibrated massive dims |
| ``POST /api/chat/stream`` | an answer as Server-Sent Events: ``status``, ``prompt``, ``token``..., ``done`` or ``error`` |
| ``POST /api/chat/replay`` | another variant's answer read by ``variant``: the same events, same tokens |
| ``POST /api/chat/save`` | writes ``inference/{variant}/chat/{id}.json`` (through layout.py) |
| ``GET /api/chat/{exp}/saved/{variant}/{id}`` | a saved conversation |

Variants are names from the experiment's ``variants:`` table; a request never carries a path.
Bad names are 400, unknown variants, traits without vectors or missing saves 404, and an error
once the stream has started is an ``error`` event; all are one line.

>>> # curl -N -X POST localhost:8000/api/chat/stream -H 'content-type: application/json' \\
>>> #   -d '{"experiment":"demo","variant":"instruct","traits":[{"trait":"demo/optimism"}],
>>> #        "messages":[{"role":"user","content":"how is the game going ?"}]}'
"""


import asyncio
import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError, one_line
from ..jsonio import read_json, write_json
from ..layout import SCHEMA_VERSION, Layout, check_name
from .engine import WatchSpec, answer_events, check_messages, replay_events, resolve_watches
from .experiments import UnknownName, load_experiment
from .pool import ModelPool, estimate_bytes

MAX_SAVE_BYTES = 4 * 2**20  # a saved conversation (tokens and curves included)


@dataclass(frozen=True)
class ChatSettings:
    """``serve --max-new-tokens --max-resident --device``."""

    max_new_tokens: int = 256  # the cap; a request asking for more gets this many
    max_resident: int = 2
    device: str = "auto"
    default_max_new_tokens: int = 48


def sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def chat_router(root: Path, settings: ChatSettings, pool: ModelPool | None = None):
    """The chat's ``APIRouter`` over the experiments directory ``root``."""
    from fastapi import APIRouter, HTTPException, Request
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, Field

    from ..dashboard_api import NotFound, inside

    pool = pool or ModelPool(settings.max_resident, device=settings.device)
    router = APIRouter()

    class Watch(BaseModel):
        trait: str
        layer: int | None = Field(None, ge=0)
        method: str | None = None

    class Message(BaseModel):
        role: str
        content: str

    class ChatRequest(BaseModel):
        experiment: str
        variant: str
        traits: list[Watch] = []
        messages: list[Message]
        max_new_tokens: int = Field(settings.default_max_new_tokens, ge=1)
        min_new_tokens: int = Field(0, ge=0)
        temperature: float = Field(0.0, ge=0.0, le=10.0)
        seed: int = 0
        clean: str = "none"

    class ReplayRequest(ChatRequest):
        response_ids: list[int]
        response_text: str | None = None
        source_variant: str | None = None

    class SaveRequest(BaseModel):
        experiment: str
        variant: str
        chat: dict
        id: str | None = None

    def experiment_layout(name: str) -> Layout:
        lay = Layout(root, name)
        if not inside(root, lay.root).is_dir():
            raise NotFound(f"no experiment {name!r} in {root}")
        return lay

    def prepare(req: ChatRequest):
        """Everything checked before a model loads or a stream starts."""
        lay = experiment_layout(req.experiment)
        try:
            exp = load_experiment(req.experiment, root)
            spec = exp.spec(req.variant)
        except UnknownName as exc:
            raise NotFound(str(exc)) from None
        try:
            messages = check_messages([m.model_dump() for m in req.messages])
        except PipelineError as exc:
            raise HTTPException(400, one_line(exc)) from None
        try:
            watches = resolve_watches(lay, exp, req.variant, [
                WatchSpec(w.trait, w.layer, w.method) for w in req.traits], req.clean)
        except PipelineError as exc:
            if str(exc).startswith("bad "):
                raise HTTPException(400, one_line(exc)) from None
            raise NotFound(str(exc)) from None
        return exp, spec, messages, watches

    def stream(request: Request, key, spec, work, notes: list[str]):
        """Run ``work(lm, should_stop, on_token)`` (an event iterator) in a thread; stream it."""
        ticket = pool.enqueue(key)
        cancel = threading.Event()
        events: queue.Queue = queue.Queue()

        def worker():
            try:
                last = None
                while not pool.wait_turn(ticket, 0.25):
                    if cancel.is_set():
                        return
                    pos = pool.position(ticket)
                    if pos != last:
                        events.put({"type": "status", "state": "queued", "position": pos,
                                    "message": f"queued: {pos} ahead on {spec.name}"})
                        last = pos
                lm = pool.model(ticket, spec, on_status=lambda m: events.put(
                    {"type": "status", "state": "loading", "message": m}))
                events.put({"type": "status", "state": "generating", "position": 0,
                            "message": f"{spec.name} is answering", "pool": pool.status()})
                for ev in work(lm, cancel.is_set, lambda: pool.count_token(key)):
                    events.put(ev)
                    if cancel.is_set():
                        break
            except PipelineError as exc:
                events.put({"type": "error", "message": one_line(exc)})
            except Exception as exc:  # noqa: BLE001  (a model failure reaches the page as one line)
                events.put({"type": "error", "message": f"{type(exc).__name__}: {one_line(exc)}"})
            finally:
                pool.release(ticket)
                events.put(None)

        threading.Thread(target=worker, name=f"chat-{spec.name}-{ticket.number}",
                         daemon=True).start()

        async def body():
            try:
                yield sse({"type": "status", "state": "queued", "position": pool.position(ticket),
                           "message": "; ".join(notes) or "request accepted"})
                while True:
                    try:
                        ev = events.get_nowait()
                    except queue.Empty:
                        if await request.is_disconnected():
                            break
                        await asyncio.sleep(0.01)
                        continue
                    if ev is None:
                        break
                    yield sse(ev)
            finally:  # the client went away (or the answer ended): stop generating
                cancel.set()
                ticket.cancelled.set()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def cap(req: ChatRequest) -> tuple[int, int, list[str]]:
        notes = []
        n = req.max_new_tokens
        if n > settings.max_new_tokens:
            notes.append(f"max_new_tokens {n} capped at {settings.max_new_tokens} (serve "
                         "--max-new-tokens)")
            n = settings.max_new_tokens
        return n, min(req.min_new_tokens, n), notes

    @router.get("/api/chat/status")
    def status():
        return {"settings": settings.__dict__, "pool": pool.status()}

    @router.get("/api/chat/{experiment}")
    def options(experiment: str):
        lay = experiment_layout(experiment)
        try:
            exp = load_experiment(experiment, root)
        except UnknownName as exc:
            raise NotFound(str(exc)) from None
        from ..monitoring.massive_dims import find_calibration

        resident = {r["variant"]: r for r in pool.status()["resident"]
                    if r["experiment"] == experiment}
        variants = []
        for name in exp.variants:
            spec = exp.specs[name]
            found = find_calibration(lay, name)
            variants.append({
                "name": name, "model": spec.model, "lora": spec.lora, "dtype": spec.dtype,
                "use_chat_template": spec.use_chat_template,
                "estimate_bytes": estimate_bytes(spec), "resident": resident.get(name),
                "massive_dims": None if found is None else found[0]["dims"],
            })
        traits = []
        for trait in lay.traits("extraction"):
            files = lay.vector_files(trait, exp.extraction_variant)
            if files:
                traits.append({"trait": trait, "layers": sorted({f[3] for f in files}),
                               "methods": sorted({f[2] for f in files})})
        return {"schema_version": SCHEMA_VERSION, "experiment": experiment,
                "variants": variants, "extraction_variant": exp.extraction_variant,
                "application_variant": exp.application_variant,
                "default_layer": exp.default_layer, "traits": traits,
                "settings": settings.__dict__}

    @router.post("/api/chat/stream")
    def chat_stream(req: ChatRequest, request: Request):
        _exp, spec, messages, watches = prepare(req)
        n, n_min, notes = cap(req)

        def work(lm, should_stop, on_token):
            return answer_events(lm, messages, watches, max_new_tokens=n,
                                 temperature=req.temperature, seed=req.seed,
                                 min_new_tokens=n_min, should_stop=should_stop,
                                 on_token=on_token)

        return stream(request, (req.experiment, req.variant), spec, work, notes)

    @router.post("/api/chat/replay")
    def chat_replay(req: ReplayRequest, request: Request):
        _exp, spec, messages, watches = prepare(req)
        if req.source_variant is not None:
            check_name("model variant", req.source_variant)
        if not req.response_ids or len(req.response_ids) > 4 * settings.max_new_tokens:
            raise HTTPException(422, f"bad response_ids: expected 1..{4 * settings.max_new_tokens} ids")

        def work(lm, _should_stop, _on_token):
            for ev in replay_events(lm, messages, req.response_ids, watches, req.response_text):
                if ev["type"] == "done":
                    ev["replayed_from"] = req.source_variant
                yield ev

        return stream(request, (req.experiment, req.variant), spec, work, [])

    @router.post("/api/chat/save")
    def save(req: SaveRequest):
        lay = experiment_layout(req.experiment)
        try:
            load_experiment(req.experiment, root).spec(req.variant)
        except UnknownName as exc:
            raise NotFound(str(exc)) from None
        chat_id = req.id or (time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3))
        path = lay.chat_path(req.variant, chat_id)  # LayoutError (400) for a bad id
        inside(root, path.parent.parent)
        record = {"schema_version": SCHEMA_VERSION, "experiment": req.experiment,
                  "variant": req.variant, "id": chat_id,
                  "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "chat": req.chat}
        if len(json.dumps(record)) > MAX_SAVE_BYTES:
            raise HTTPException(413, f"conversation too large to save: over {MAX_SAVE_BYTES} bytes")
        write_json(path, record)
        return {"id": chat_id, "file": path.relative_to(root).as_posix()}

    @router.get("/api/chat/{experiment}/saved/{variant}/{chat_id}")
    def saved(experiment: str, variant: str, chat_id: str):
        lay = experiment_layout(experiment)
        path = lay.chat_path(variant, chat_id)
        if not inside(root, path).is_file():
            raise NotFound(f"no saved chat {chat_id!r} of {variant!r} in {experiment!r}")
        return read_json(path)

    router.pool = pool  # for tests and the status page
    return router
