"""The HTTP side of `moestream serve`: OpenAI's /v1/chat/completions, /v1/completions and /v1/models (whole or
as server-sent events), /health and Prometheus /metrics. Every error is OpenAI-style JSON with its status.

Rules, for a server that meets hostile clients:
- The event loop never does work that grows with the request: the JSON body is parsed, validated and tokenized
  (a 4 MiB prompt takes seconds) on a worker thread, so /health and every other request stay answered meanwhile.
- Input that Python's json accepts but that is no request is a 400, not a 500: nesting too deep for the parser,
  lone surrogates (see protocol.py). Error bodies are written as ASCII JSON, so no message can fail to encode.
- A client that leaves is noticed while its request waits, streamed or not (the ASGI channel says
  http.disconnect), and its engine request is cancelled at the next step.
- Every response is counted by endpoint and status in one place (`ServerApp`), and the requests in flight are
  known there too: the graceful shutdown (serve.py) waits for them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..engine import (Constraint, EngineRequest, GrammarError, SamplingParams, json_object_grammar,
                      json_schema_grammar)
from ..errors import QueueFull, SchedulerClosed
from . import protocol as P
from .metrics import Metrics
from .responses import OpenAIRender, Reply
from .anthropic import AnthropicRender, error_body, parse_messages
from .chat_output import ChatOutput
from .chat_plan import capabilities, plan_chat
from .openai_responses import ResponsesRender, parse_response_request
from .toolformats import OutputParser
from .worker import EngineWorker, ModelSwitched, Served

MAX_BODY_BYTES = 4 << 20
CLIENT_GONE = 499  # nginx's "client closed request": what a request whose client left is counted as
DRAIN_POLL_S = 0.05
_ENDPOINTS = frozenset(("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
                        "/v1/responses", "/v1/messages", "/v1/messages/count_tokens"))
T = TypeVar("T")
REQUEST_LOG = logging.getLogger("moestream.requests")  # one line per generating request (serve configures it)


class ServerApp:
    """The ASGI app uvicorn runs: the routes, inside a layer that counts every response by endpoint and status
    (5xx included: Starlette's last-resort 500 passes through here too) and knows how many requests are in flight."""

    def __init__(self, inner: Starlette, worker: EngineWorker, metrics: Metrics, api: "_Api | None" = None):
        self.inner, self.worker, self.metrics, self._api = inner, worker, metrics, api
        self.in_flight = 0

    def reconfigure(self, api_key: str | tuple[str, ...] | None, sampling: SamplingParams) -> None:
        """A reload: the keys a request must bring and the sampling defaults, for every request from now on
        (requests already running keep what they started with)."""
        self._api.api_keys, self._api.sampling = _keys(api_key), sampling

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        endpoint, status = _endpoint(scope["path"]), None

        async def counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.requests.labels(endpoint, str(status)).inc()
            await send(message)

        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            await self.inner(scope, receive, counted)
        except Exception:
            if status is None:  # nothing was sent: uvicorn answers 500 itself
                self.metrics.requests.labels(endpoint, "500").inc()
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def drain(self, grace: float) -> None:
        """Shutdown: answer new requests 503, let those in flight finish for up to `grace` seconds, then end the
        rest through the engine (a stream gets a last chunk with an error object, then `data: [DONE]`)."""
        self.worker.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        self.worker.halt()


def _endpoint(path: str) -> str:
    # a fixed set of label values: a client sending random paths must not grow the metrics
    if path in _ENDPOINTS:
        return path
    if path.startswith("/static/"):
        return "/static"
    return "/v1/models/{model_id}" if path.startswith("/v1/models/") else "other"


def create_app(worker: EngineWorker, metrics: Metrics, api_key: str | tuple[str, ...] | None = None,
               max_body: int = MAX_BODY_BYTES, ui: bool = False,
               sampling: SamplingParams = P.SERVER_SAMPLING) -> ServerApp:
    """api_key: the key (or keys) a request must bring, or None; ui: serve the chat page (server/static/, no build
    step, nothing fetched from elsewhere) at /; sampling: the defaults for what a request leaves out."""
    api = _Api(worker, metrics, _keys(api_key), max_body, sampling)
    routes = [Route("/health", api.health), Route("/metrics", api.metrics),
              Route("/v1/models", api.models), Route("/v1/models/{model_id:path}", api.model),
              Route("/v1/chat/completions", api.chat, methods=["POST"]),
              Route("/v1/completions", api.completions, methods=["POST"]),
              Route("/v1/responses", api.responses, methods=["POST"]),
              Route("/v1/messages", api.messages, methods=["POST"]),
              Route("/v1/messages/count_tokens", api.count_tokens, methods=["POST"])]
    if ui:
        routes += [Route("/", _chat_page), Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    handlers = {P.APIError: _api_error, HTTPException: _http_error, Exception: _internal_error}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()  # loads the model in the background: /health answers 503 until it is ready
        yield
        worker.stop(0.0)  # the drain (serve.py) has already let running requests finish, then ended the rest

    inner = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return ServerApp(inner, worker, metrics, api)


def _keys(api_key: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    return (api_key,) if isinstance(api_key, str) else tuple(api_key or ())


STATIC_DIR = Path(__file__).parent / "static"


async def _chat_page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def _error(request: Request, err: P.APIError) -> Response:
    """The error in the shape of the API the request was for (Anthropic's under /v1/messages, else OpenAI's);
    ASCII JSON, so that a message quoting odd input (a lone surrogate) still encodes."""
    if request.url.path.startswith("/v1/messages"):  # Anthropic answers every invalid request with 400
        return Response(json.dumps(error_body(err)), status_code=400 if err.status == 422 else err.status,
                        media_type="application/json")
    return Response(json.dumps(err.body()), status_code=err.status, media_type="application/json")


async def _api_error(request: Request, exc: P.APIError) -> Response:
    return _error(request, exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _error(request, P.APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _error(request, P.APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))


@dataclass
class Prepared:
    """A request ready for the engine."""

    parsed: P.ChatRequest | P.CompletionRequest
    prompt: list[int]
    echo: str  # text completions with echo: the prompt's text, which the reply starts with
    constraint: Constraint | None  # the grammar the output must follow
    parser: OutputParser | None  # chat: splits reasoning and tool calls out of the text


PARSERS = {"chat": P.parse_chat, "text": P.parse_completion, "messages": parse_messages,
           "count_tokens": lambda body, defaults: parse_messages(body, defaults, counting=True),
           "responses": parse_response_request}
RENDERERS = {"chat": OpenAIRender, "text": OpenAIRender, "messages": AnthropicRender, "responses": ResponsesRender}


class _Api:
    def __init__(self, worker: EngineWorker, metrics: Metrics, api_keys: tuple[str, ...], max_body: int,
                 sampling: SamplingParams):
        self.worker, self.m, self.max_body = worker, metrics, max_body
        self.api_keys, self.sampling = api_keys, sampling  # replaced whole by a reload (ServerApp.reconfigure)

    # ---- plain endpoints -------------------------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        if self.worker.load_error:
            return JSONResponse({"status": "error", "error": self.worker.load_error}, status_code=503)
        if not self.worker.ready:
            return JSONResponse({"status": "closing" if self.worker.closing else "loading"}, status_code=503)
        fault = self.worker.served.engine.fault  # an expert rank failed: the model cannot compute any more
        if fault:
            return JSONResponse({"status": "error", "error": fault}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        return Response(self.m.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> JSONResponse:
        served = self._served(request)
        return JSONResponse({"object": "list", "data": [_model_card(served)]})

    async def model(self, request: Request) -> JSONResponse:
        served = self._served(request)
        if not self._known_model(request.path_params["model_id"], served):
            raise P.model_not_found(request.path_params["model_id"])
        return JSONResponse(_model_card(served))

    # ---- completions -----------------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "text")

    async def responses(self, request: Request) -> Response:
        return await self._complete(request, "responses")

    async def messages(self, request: Request) -> Response:
        return await self._complete(request, "messages")

    async def count_tokens(self, request: Request) -> JSONResponse:
        served = self._served(request, "messages")
        raw = await self._read_body(request)
        prep = await self._prepare(raw, served, "count_tokens")
        return JSONResponse({"input_tokens": len(prep.prompt)})

    async def _complete(self, request: Request, kind: str) -> Response:
        """Every generating endpoint: parse and plan the request off the event loop, run it through the engine,
        and answer whole or as server-sent events in `kind`'s API (`render`). While the server switches models
        (a reload) a new request waits for the new one; one prepared just before the switch is prepared again."""
        await self.worker.settled()
        served = self._served(request, kind)  # now: a request begun before a shutdown may still finish
        raw = await self._read_body(request)
        while True:
            try:
                return await self._complete_on(served, request, raw, kind)
            except ModelSwitched:
                served = self._served(request, kind)

    async def _complete_on(self, served: Served, request: Request, raw: bytes, kind: str) -> Response:
        prep = await self._prepare(raw, served, kind)
        opt = prep.parsed.options
        ereq = self._engine_request(opt, prep.prompt, served, prep.constraint)
        reply = Reply("text" if kind == "text" else "chat", served.model_id, len(prep.prompt))
        output = ChatOutput(served.tokenizer, opt.stop, prep.parser)
        render = RENDERERS[kind](reply, prep, served.tokenizer)
        try:
            if opt.stream:
                return await self._stream(request, served, reply, ereq, output, render)
            work = self._collect(reply, self.worker.stream(ereq, served), output)
            result = await _unless_disconnected(request, work)
        except QueueFull:
            raise P.overloaded() from None
        except SchedulerClosed:
            raise P.unavailable("shutting down") from None
        REQUEST_LOG.info(reply.log_line(request.url.path) + ("" if result is not None else " · client left"))
        return Response(status_code=CLIENT_GONE) if result is None else JSONResponse(render.whole())

    async def _stream(self, request: Request, served: Served, reply: Reply, ereq: EngineRequest,
                      output: ChatOutput, render) -> Response:
        events = self.worker.stream(ereq, served)
        first = await _unless_disconnected(request, anext(events))  # QueueFull surfaces here, before the 200
        if first is None or first.finish_reason in ("error", "cancelled"):
            await events.aclose()
            if first is None:
                return Response(status_code=CLIENT_GONE)
            raise _engine_error(first)  # nothing sent yet: a plain error reply rather than a stream of one
        gen = self._sse(reply, events, first, ereq, output, render, request.url.path)
        return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _served(self, request: Request, kind: str = "") -> Served:
        self._check_key(request, kind)
        if self.worker.load_error:
            raise P.unavailable(f"the model failed to load: {self.worker.load_error}")
        if not self.worker.ready:
            raise P.unavailable("shutting down" if self.worker.closing else "the model is still loading")
        fault = self.worker.served.engine.fault
        if fault:
            raise P.unavailable(fault)
        return self.worker.served

    def _check_key(self, request: Request, kind: str) -> None:
        """OpenAI's clients send `Authorization: Bearer KEY`, Anthropic's `x-api-key: KEY` (either is taken on the
        Messages endpoints, as proxies in front of them mix the two)."""
        keys = self.api_keys
        if not keys:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if kind in ("messages", "count_tokens") and not given:
            given = request.headers.get("x-api-key", "").strip()
        if not sum(secrets.compare_digest(given.encode(), key.encode()) for key in keys):  # each one compared
            raise P.unauthorized()

    async def _read_body(self, request: Request) -> bytes:
        raw, size = bytearray(), 0
        async for part in request.stream():  # read to the end even when too large: clients expect an answer
            size += len(part)
            if size <= self.max_body:
                raw += part
        if size > self.max_body:
            raise P.too_large(self.max_body)
        return bytes(raw)

    async def _prepare(self, raw: bytes, served: Served, kind: str) -> tuple:
        """Parse, validate and tokenize on a worker thread; the event loop goes on serving meanwhile."""
        self.m.preparing.inc()
        try:
            return await run_in_threadpool(self._parse_and_encode, raw, served, kind)
        finally:
            self.m.preparing.dec()

    def _parse_and_encode(self, raw: bytes, served: Served, kind: str) -> Prepared:
        """A worker thread."""
        body = _decode_json(raw)
        parsed = PARSERS[kind](body, self.sampling)
        if not self._known_model(parsed.model, served):
            raise P.model_not_found(parsed.model)
        _check_logit_bias(parsed.options.sampling.logit_bias, served)
        if kind != "text":
            plan = plan_chat(parsed, served.engine)
            self._check_context(len(plan.prompt), served, "messages")
            constraint = plan.constraint or _constraint(parsed.options.response_format, served)
            return Prepared(parsed, plan.prompt, "", constraint, plan.parser)
        prompt, echo = self._prompt(parsed, served)
        return Prepared(parsed, prompt, echo, _constraint(parsed.options.response_format, served), None)

    @staticmethod
    def _known_model(name: str, served: Served) -> bool:
        return name in (served.model_id, served.engine.path.name, str(served.engine.path), *served.aliases)

    def _prompt(self, parsed: P.CompletionRequest, served: Served) -> tuple[list[int], str]:
        """A completion's prompt token ids, and the prompt text to echo (with echo only)."""
        tok = served.tokenizer
        if isinstance(parsed.prompt, str):
            # a prompt string is plain text too, as in OpenAI's API; token-id prompts can hold control tokens
            ids, echo = tok.encode(parsed.prompt, add_bos=None, parse_special=False), parsed.prompt
        else:
            ids = list(parsed.prompt)
            if max(ids) >= tok.vocab_size:
                raise P.APIError(400, f"token id {max(ids)} is outside the vocabulary ({tok.vocab_size})",
                                 param="prompt")
            echo = tok.decode(ids)
        self._check_context(len(ids), served, "prompt")
        return ids, (echo if parsed.echo else "")

    @staticmethod
    def _check_context(n: int, served: Served, param: str) -> None:
        if n == 0:  # e.g. prompt "" for a model that adds no BOS: there is nothing to continue from
            raise P.APIError(400, "the prompt encodes to no tokens; give a non-empty prompt", param=param,
                             code="empty_prompt")
        if n >= served.context_length:
            raise P.APIError(400, f"the prompt has {n} tokens but the context holds {served.context_length} "
                             "(prompt and completion together); shorten the prompt", param=param,
                             code="context_length_exceeded")

    @staticmethod
    def _engine_request(opt: P.GenerationOptions, prompt: list[int], served: Served,
                        constraint: Constraint | None) -> EngineRequest:
        room = served.context_length - len(prompt)
        max_new = min(opt.max_tokens or room, room)
        return EngineRequest(prompt, opt.sampling, max_new, on_event=lambda ev: None,
                             stop_ids=frozenset(served.tokenizer.eog_ids),
                             top_logprobs=opt.top_logprobs if opt.logprobs else None, constraint=constraint)

    # ---- producing the reply ---------------------------------------------------------------------------------

    async def _collect(self, reply: Reply, events: AsyncIterator, output: ChatOutput) -> Reply:
        try:
            async for ev in events:
                reply.parts.absorb(self._absorb(reply, ev, output))
                if reply.finish_reason:
                    break
        finally:
            await events.aclose()  # a stop string ended it early: cancel the rest
        return reply

    async def _sse(self, reply: Reply, events: AsyncIterator, first, ereq: EngineRequest, output: ChatOutput,
                   render, endpoint: str) -> AsyncIterator[bytes]:
        try:
            for frame in render.start():
                yield frame
            ev = first
            while ev is not None:
                parsed = self._absorb(reply, ev, output)
                reply.parts.absorb(parsed)
                for frame in render.events(parsed, [ev] if ev.token is not None else []):
                    yield frame
                if reply.finish_reason:
                    break
                ev = await anext(events, None)
            for frame in render.end():
                yield frame
        except P.APIError as err:  # the engine failed mid-stream: say so in the stream, then end it
            reply.finish_reason = reply.finish_reason or "error"
            for frame in render.error(err):
                yield frame
        finally:
            self.worker.scheduler.cancel(ereq)  # the client left early, or we are done: free the slot
            REQUEST_LOG.info(reply.log_line(endpoint) + " · stream")

    def _absorb(self, reply: Reply, ev, output: ChatOutput) -> list:
        """Account one engine event into `reply`; returns the output events (content, reasoning, calls) it adds."""
        if ev.finish_reason in ("error", "cancelled"):
            raise _engine_error(ev)
        parsed = []
        reply.cached_tokens = ev.cached_tokens or reply.cached_tokens
        if ev.token is not None:
            reply.first_token_at = reply.first_token_at or time.perf_counter()
            reply.completion_tokens += 1
            self.m.on_token()
            parsed = output.push(ev.token)
            if ev.logprob is not None:
                reply.logprobs.append(ev)
        if output.stopped or ev.finish_reason:
            parsed += output.flush()
            reply.finish_reason = "stop" if output.stopped else ev.finish_reason
            reply.stopped_by = output.stopped_by
            self.m.prompt_tokens.inc(reply.prompt_tokens)
        return parsed


def _engine_error(ev) -> P.APIError:
    # 'cancelled' reaches a listener only at shutdown: a client that left is not listening any more
    if ev.finish_reason == "error":
        return P.APIError(500, ev.error or "the engine failed", "server_error")
    return P.APIError(503, "The server is shutting down; the request was cancelled.", "server_error")


def _decode_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise P.malformed_json(str(exc)) from None
    except RecursionError:  # e.g. 100000 x '[': the parser's recursion limit, not a server fault
        raise P.too_deep() from None


def _constraint(fmt: P.ResponseFormat | None, served: Served) -> Constraint | None:
    """The grammar `response_format` asks for; a schema the grammar engine cannot compile is a 400 saying why."""
    if fmt is None:
        return None
    try:
        grammar = json_object_grammar() if fmt.kind == "json_object" else json_schema_grammar(fmt.schema, strict=True)
        return served.engine.grammar.compile(grammar)
    except GrammarError as exc:
        label = f"schema '{fmt.name}'" if fmt.name else "response_format"
        raise P.APIError(400, f"Invalid {label} for 'response_format': {exc}", param="response_format",
                         code="invalid_json_schema") from None


def _check_logit_bias(bias: tuple[tuple[int, float], ...], served: Served) -> None:
    outside = [token for token, _ in bias if token >= served.tokenizer.vocab_size]
    if outside:
        raise P.APIError(400, f"Invalid 'logit_bias': token id {outside[0]} is outside the vocabulary "
                         f"({served.tokenizer.vocab_size} tokens).", param="logit_bias", code="invalid_value")


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """`await work`, unless the client disconnects first: then `work` is cancelled (the engine request with it,
    by the event iterator's `finally`) and the result is None."""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # let its `finally` clauses run
    return None if task.cancelled() else task.result()


async def _disconnect(request: Request) -> None:
    # the body has been read: what the ASGI channel says next is http.disconnect, when the client goes
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _model_card(served: Served) -> dict:
    return {"id": served.model_id, "object": "model", "created": served.created, "owned_by": "moestream",
            "context_length": served.context_length, "capabilities": capabilities(served.engine)}
