"""The dashboard: ``python -m trait_pipeline.serve [experiments dir] [--host H] [--port N]``.

A FastAPI app with a JSON API over :mod:`trait_pipeline.dashboard_api` and a static page
(``trait_pipeline/dashboard/``) that plots with the Plotly bundle shipped inside the
``plotly`` Python package, so nothing is fetched from a CDN. Bound to 127.0.0.1 unless
told otherwise: the API reads any experiment under the directory it is given.

>>> from fastapi.testclient import TestClient
>>> import tempfile
>>> client = TestClient(create_app(tempfile.mkdtemp()))
>>> client.get("/api/experiments").json()
{'experiments': []}
>>> client.get("/api/experiments/%2e%2e/extraction/base").status_code
400

``python -m trait_pipeline.serve experiments --screenshots docs/img`` writes one PNG per
view of the first experiment (headless Chromium through Playwright) and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from .chat.routes import ChatSettings
from .dashboard_api import Dashboard, NotFound, list_experiments
from .errors import PipelineError, one_line
from .layout import LayoutError, check_name, default_experiments_dir
from .positions import PositionError
from .review.dashboard_views import RunNotFound
from .steering_summary import DEFAULT_MIN_COHERENCE

STATIC_DIR = Path(__file__).resolve().parent / "dashboard"
VIEWS = ("extraction", "steering", "dynamics", "runs")  # screenshots of the views that read disk only
CHROMIUM = os.environ.get("TRAIT_PIPELINE_CHROMIUM", "/usr/bin/chromium")
# a '..' segment, an encoded dot/slash/backslash or a NUL anywhere in the raw request path
_SUSPICIOUS = re.compile(r"(^|/)\.\.(/|$)|%2e|%2f|%5c|%00|\\", re.IGNORECASE)


def plotly_js() -> Path:
    """The ``plotly.min.js`` bundled in the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise PipelineError(f"plotly.min.js not found in the plotly package ({path.parent})")
    return path


def create_app(root: str | Path, chat: ChatSettings | None = None):
    """The dashboard app over the experiments directory ``root`` (live chat: ``chat``)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    from .chat.routes import chat_router

    root = Path(root).resolve()
    dash = Dashboard(root)
    app = FastAPI(title="trait-pipeline dashboard", docs_url=None, redoc_url=None)
    router = chat_router(root, chat or ChatSettings())
    app.state.chat_pool = router.pool
    app.include_router(router)

    @app.middleware("http")
    async def refuse_traversal(request: Request, call_next):
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw_s = raw.decode("latin-1")
        if _SUSPICIOUS.search(raw_s) or _SUSPICIOUS.search(unquote(raw_s)):
            return JSONResponse({"detail": "path refused: traversal or encoded separators"},
                                status_code=400)
        return await call_next(request)

    def error(status: int):
        async def handler(_request, exc):
            return JSONResponse({"detail": one_line(exc)}, status_code=status)
        return handler

    app.add_exception_handler(NotFound, error(404))
    app.add_exception_handler(RunNotFound, error(404))
    app.add_exception_handler(LayoutError, error(400))
    app.add_exception_handler(PositionError, error(400))
    app.add_exception_handler(PipelineError, error(500))  # unreadable data on disk

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_bundle():
        return FileResponse(plotly_js(), media_type="application/javascript")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/experiments")
    def experiments():
        return list_experiments(root)

    @app.get("/api/experiments/{experiment}")
    def overview(experiment: str):
        return dash.overview(experiment)

    @app.get("/api/experiments/{experiment}/runs")
    def runs(experiment: str):
        return dash.runs(experiment)

    @app.get("/api/experiments/{experiment}/config")
    def run_config(experiment: str, run: str):
        return dash.run_config(experiment, run)

    @app.get("/api/experiments/{experiment}/diff")
    def run_diff(experiment: str, a: str, b: str, all: bool = False):
        return dash.run_diff(experiment, a, b, all)

    @app.get("/api/experiments/{experiment}/extraction/{variant}")
    def extraction(experiment: str, variant: str):
        return dash.extraction(experiment, variant)

    @app.get("/api/experiments/{experiment}/steering/{variant}")
    def steering_index(experiment: str, variant: str, trait: str):
        return dash.steering_index(experiment, variant, trait)

    @app.get("/api/experiments/{experiment}/steering/{variant}/results")
    def steering(experiment: str, variant: str, trait: str, position: str, prompt_set: str,
                 min_coherence: float = Query(DEFAULT_MIN_COHERENCE, ge=0, le=100)):
        return dash.steering(experiment, variant, trait, position, prompt_set, min_coherence)

    @app.get("/api/experiments/{experiment}/steering/{variant}/responses")
    def steering_responses(experiment: str, variant: str, trait: str, position: str,
                           prompt_set: str, run: str):
        return dash.steering_responses(experiment, variant, trait, position, prompt_set, run)

    @app.get("/api/experiments/{experiment}/inference/{variant}")
    def inference_index(experiment: str, variant: str):
        return dash.inference_index(experiment, variant)

    @app.get("/api/experiments/{experiment}/inference/{variant}/massive")
    def massive(experiment: str, variant: str):
        from .monitoring.massive_dims import find_calibration

        lay = dash.layout(experiment)
        check_name("model variant", variant)
        found = find_calibration(lay, variant)
        if found is None:  # not an error: most variants are never calibrated
            return {"calibrated": False,
                    "detail": f"no massive-dims calibration for {variant!r}; run: python -m "
                              f"trait_pipeline.infer model_variant={variant} massive.calibrate=true"}
        data, path = found
        return {**{k: v for k, v in data.items() if k != "mean_abs_by_layer"},
                "calibrated": True, "file": path.relative_to(root).as_posix()}

    @app.get("/api/experiments/{experiment}/inference/{variant}/projection")
    def projection(experiment: str, variant: str, trait: str, prompt_set: str, id: str,
                   compare: str | None = None):
        return dash.projection(experiment, variant, trait, prompt_set, id, compare or None)

    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(root: str | Path, host: str = "127.0.0.1", port: int | None = None,
            chat: ChatSettings | None = None, app=None) -> Iterator[str]:
    """Serve the dashboard in a background thread; yields its base URL.

    >>> # with running("experiments") as url: requests.get(url + "/api/experiments")
    """
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app or create_app(root, chat), host=host, port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise PipelineError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def screenshots(root: Path, out: Path, experiment: str | None = None,
                width: int = 1400, height: int = 1000) -> list[Path]:
    """One PNG per view of ``experiment`` (default: the first found), written to ``out``."""
    from playwright.sync_api import sync_playwright

    names = list_experiments(root)["experiments"]
    if not names:
        raise PipelineError(f"no experiments in {root}: run the pipeline first "
                            "(python -m trait_pipeline.demo)")
    exp = experiment or names[0]
    if exp not in names:
        raise PipelineError(f"no experiment {exp!r} in {root}; found: {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    # show the variant comparison where the data allows it
    overview = Dashboard(root).overview(exp)
    compare = {}
    for view, area in (("steering", "steering"), ("dynamics", "inference")):
        variants = overview[area]["variants"]
        if len(variants) > 1:
            compare[view] = f"&variant={variants[0]}&compare={variants[1]}"
    written = []
    with running(root) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            for view in VIEWS:
                page.goto(f"{url}/?exp={exp}&view={view}{compare.get(view, '')}")
                page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
                path = out / f"dashboard-{view}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
            written += _chat_screenshots(page, url, exp, out, root)
        finally:
            browser.close()
    return written


CHAT_SHOTS = (  # (file, query, message): one answer, and two variants on the same tokens
    ("dashboard-chat.png", "cvariant=instruct", "how is the game going ?"),
    ("dashboard-chat-compare.png", "cvariant=instruct&cmode=replay&cvariant_b=rm_lora",
     "what do you think about the concert ?"),
)


def _chat_screenshots(page, url: str, exp: str, out: Path, root: Path) -> list[Path]:
    """The live chat answering (needs the experiment's preset and trait vectors)."""
    from .chat.experiments import presets

    if exp not in presets() or not Dashboard(root).overview(exp)["extraction"]["traits"]:
        return []
    written = []
    for name, query, message in CHAT_SHOTS:
        page.goto(f"{url}/?exp={exp}&view=chat&{query}&cmax=24")
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
        page.fill("#chat-input", message)
        page.click("#chat-send")
        page.wait_for_function("Number(document.body.dataset.answered || 0) > 0", timeout=300_000)
        path = out / name
        page.screenshot(path=str(path), full_page=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trait_pipeline.serve",
                                     description="Dashboard over an experiments directory.")
    parser.add_argument("experiments", nargs="?", type=Path,
                        default=default_experiments_dir(),
                        help="experiments directory (default: $TRAIT_PIPELINE_EXPERIMENTS "
                             "or ./experiments)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--screenshots", type=Path, metavar="DIR", default=None,
                        help="write one PNG per view to DIR and exit")
    parser.add_argument("--experiment", default=None, help="experiment for --screenshots")
    chat = parser.add_argument_group("live chat")
    chat.add_argument("--max-new-tokens", type=int, default=ChatSettings.max_new_tokens,
                      help="cap on the tokens of one chat answer (default %(default)s)")
    chat.add_argument("--max-resident", type=int, default=ChatSettings.max_resident,
                      help="models kept loaded at once (default %(default)s)")
    chat.add_argument("--device", default=ChatSettings.device,
                      help="where chat models load: auto, cpu, cuda, cuda:N (default %(default)s)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1 or args.max_resident < 1:
        print(f"error: bad --max-new-tokens {args.max_new_tokens} / --max-resident "
              f"{args.max_resident}: expected ints >= 1", file=sys.stderr)
        return 2
    settings = ChatSettings(max_new_tokens=args.max_new_tokens, max_resident=args.max_resident,
                            device=args.device,
                            default_max_new_tokens=min(ChatSettings.default_max_new_tokens,
                                                       args.max_new_tokens))
    try:
        if not args.experiments.is_dir():
            raise PipelineError(f"experiments directory {args.experiments} does not exist")
        if args.screenshots is not None:
            for p in screenshots(args.experiments, args.screenshots, args.experiment):
                print(p)
            return 0
        import uvicorn

        print(f"dashboard: http://{args.host}:{args.port}/  (experiments: {args.experiments})")
        uvicorn.run(create_app(args.experiments, settings), host=args.host, port=args.port,
                    log_level="warning")
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
