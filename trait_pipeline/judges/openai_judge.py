"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, ...).

>>> # judge = OpenAIJudge(OpenAISettings(base_url="http://localhost:8000/v1", model="Qwen/..."),
>>> #                     cache=JudgeCache(Path(".cache")))
>>> # judge.score_trait(spec, [("how is the project going ?", "it is thriving .")])
>>> # [92.4]

Each score is one request with ``max_tokens=1, temperature=0, logprobs=true,
top_logprobs=N``: the answer is the probability-weighted mean of the top tokens that are
integers 0-100 (:mod:`trait_pipeline.judges.scoring`). Requests run concurrently (at most
``max_concurrency`` in flight) and retry with exponential backoff on 429, 5xx and network
errors. The API key is read from the environment variable named by ``api_key_env`` and
lives only in the request headers: never in the settings, a repr, the cache or a message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tqdm import tqdm

from ..errors import PipelineError
from ..safety.secrets import redact
from . import prompts as P
from .cache import JudgeCache
from .prompt_judge import PromptJudge
from .scoring import RawScore, weighted_score_from_logprobs
from .settings import OpenAISettings

log = logging.getLogger(__name__)

T = TypeVar("T")
# tenacity 9.2 renamed wait_exponential_jitter's ``initial`` to ``multiplier`` (8.x has only ``initial``)
_FIRST_WAIT = ("multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter.__init__).parameters
               else "initial")

class _Retryable(Exception):
    """A response worth asking again for (rate limit, server error)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class _Rejected(Exception):
    """The server refused this one request (HTTP 400/422): its score is None."""


class _Unreachable(Exception):
    """No connection to the server at all."""


def run_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    """Run an async batch from sync code, whether or not this thread runs an event loop.

    With no running loop (scripts, SLURM jobs) it uses :func:`asyncio.run`; inside one
    (Jupyter, an async caller) it runs a fresh loop in a helper thread, since the running
    loop cannot be blocked on.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


class OpenAIJudge(PromptJudge):
    """Logprob-scored judge over HTTP; see the module docstring."""

    kind = "openai"

    def __init__(self, settings: OpenAISettings, cache: JudgeCache | None) -> None:
        super().__init__(settings.min_mass, cache if settings.cache else None)
        self.settings = settings
        self.model = settings.model
        self.base_url = settings.base_url.rstrip("/")
        self._api_key = _read_api_key(settings.api_key_env)

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url}

    def _identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "base_url": self.base_url}

    def _score_params(self) -> dict[str, Any]:
        return {"top_logprobs": self.settings.top_logprobs, "seed": self.settings.seed,
                "temperature": 0}

    # requests ------------------------------------------------------------------------------
    def _body(self, messages: P.Messages, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0, **extra}
        if self.settings.seed is not None:
            body["seed"] = self.settings.seed
        return body

    def _score_uncached(self, prompts: list[P.Messages]) -> list[RawScore | None]:
        bodies = [
            self._body(m, max_tokens=1, logprobs=True, top_logprobs=self.settings.top_logprobs)
            for m in prompts
        ]
        return self._run_batch(bodies, _parse_logprob_score, "score")

    def _verdict_uncached(self, prompts: list[P.Messages]) -> list[str | None]:
        bodies = [self._body(m, max_tokens=self.verdict_tokens) for m in prompts]
        return self._run_batch(bodies, _parse_text, "relevance")

    def _run_batch(
        self, bodies: list[dict], parse: Callable[[dict], T], what: str
    ) -> list[T | None]:
        failures: list[str] = []  # one summary line at the end, not a warning per request
        results = run_coroutine(lambda: self._post_all(bodies, parse, what, failures))
        if failures:
            self.note_failures(len(failures), failures[-1])
            log.warning(
                "judge %s: %d of %d %s requests failed after %d attempts (last: %s); "
                "their scores are None", self.model, len(failures), len(bodies), what,
                self.settings.retries + 1, self.last_error,
            )
        return results

    async def _post_all(
        self, bodies: list[dict], parse: Callable[[dict], T], what: str, failures: list[str]
    ) -> list[T | None]:
        s = self.settings
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=s.max_concurrency, max_keepalive_connections=s.max_concurrency)
        gate = asyncio.Semaphore(s.max_concurrency)
        bar = tqdm(total=len(bodies), desc=f"judge {what}", unit="req", file=sys.stderr,
                   leave=False, disable=len(bodies) < 2)
        async with httpx.AsyncClient(base_url=self.base_url + "/", headers=headers,
                                     timeout=s.timeout_s, limits=limits) as client:

            async def one(body: dict) -> T | None:
                async with gate:
                    try:
                        data = await self._post(client, body)
                        return parse(data)
                    except (_Retryable, _Rejected, httpx.TimeoutException,
                            httpx.TransportError) as exc:
                        failures.append(_describe_error(exc))
                        return None
                    finally:
                        bar.update(1)

            tasks = [asyncio.create_task(one(b)) for b in bodies]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # one fatal error (bad key, unreachable server) ends the batch at once
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                bar.close()

    async def _post(self, client: httpx.AsyncClient, body: dict) -> dict:
        s = self.settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.retries + 1),
            wait=wait_exponential_jitter(**{_FIRST_WAIT: s.backoff_s}, max=30.0, jitter=s.backoff_s / 2),
            retry=retry_if_exception_type((_Retryable, _Unreachable, httpx.TransportError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        resp = await client.post("chat/completions", json=body)
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                        raise _Unreachable(type(exc).__name__) from None
                    return self._check_response(resp)
        except _Unreachable as exc:
            raise PipelineError(
                f"cannot reach the judge server at {self.base_url} ({exc}) after "
                f"{s.retries + 1} attempts; check judge.base_url or start the server"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity returns or raises

    def _check_response(self, resp: httpx.Response) -> dict:
        status = resp.status_code
        if status == 200:
            try:
                data = resp.json()
            except ValueError:
                raise _Retryable(status, "response is not JSON") from None
            if not isinstance(data, dict) or not data.get("choices"):
                raise _Retryable(status, "response has no choices")
            return data
        detail = _error_detail(resp)
        if status in (401, 403):
            env = self.settings.api_key_env
            raise PipelineError(
                f"the judge server at {self.base_url} refused the API key (HTTP {status}: "
                f"{detail}); check the key in ${env}" if env else
                f"the judge server at {self.base_url} wants an API key (HTTP {status}); "
                "set judge.api_key_env to the name of the variable holding it"
            )
        if status == 404:
            raise PipelineError(
                f"the judge server at {self.base_url} answered 404 for model {self.model!r} "
                f"({detail}); check judge.base_url (it should end in /v1) and judge.model"
            )
        if status in (408, 429) or status >= 500:
            raise _Retryable(status, detail)
        raise _Rejected(f"HTTP {status}: {detail}")


def _read_api_key(env: str | None) -> str | None:
    if env is None or str(env).strip() in ("", "null", "None"):
        return None
    key = os.environ.get(str(env))
    if not key:
        raise PipelineError(
            f"judge=openai needs an API key in the environment variable {env}, which is not set; "
            f"export {env}=..., or set judge.api_key_env=null for a server without auth"
        )
    return key


def _error_detail(resp: httpx.Response) -> str:
    """The server's error message, on one line, with credentials masked (proxies echo keys)."""
    try:
        err = resp.json().get("error")
        text = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        text = resp.text
    auth = resp.request.headers.get("authorization", "") if resp.request is not None else ""
    key = auth.split(" ", 1)[1] if " " in auth else ""
    return redact(" ".join(redact(str(text or resp.reason_phrase), [key] if key else []).split()))[:200]


def _describe_error(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)


def _parse_logprob_score(data: dict) -> RawScore:
    choice = data["choices"][0]
    logprobs = choice.get("logprobs")
    if logprobs is None:
        raise PipelineError(
            "the judge server returned no logprobs; it must support logprobs=true and "
            "top_logprobs on /chat/completions (OpenAI and vLLM do)"
        )
    content = logprobs.get("content") or []
    if not content:  # the model produced no token at all
        return RawScore(None, 0.0)
    first = content[0]
    tops = first.get("top_logprobs") or [first]
    return weighted_score_from_logprobs(
        (str(t.get("token", "")), float(t.get("logprob", float("-inf")))) for t in tops
    )


def _parse_text(data: dict) -> str | None:
    message = data["choices"][0].get("message") or {}
    return message.get("content")
