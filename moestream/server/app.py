"""The HTTP side of `moestream serve`: OpenAI's /v1/chat/completions, /v1/completions and /v1/models (whole or
as server-sent events), /health and Prometheus /metrics. Every error is OpenAI-style JSON with its status."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.scheduler import EngineRequest, QueueFull
from ..errors import MoestreamError
from . import protocol as P
from .metrics import Metrics
from .responses import Reply, chunk, usage_chunk, whole
from .textstream import TextStream
from .worker import EngineWorker, Served

MAX_BODY_BYTES = 4 << 20


def create_app(worker: EngineWorker, metrics: Metrics, api_key: str | None = None,
               max_body: int = MAX_BODY_BYTES) -> Starlette:
    api = _Api(worker, metrics, api_key, max_body)
    routes = [Route("/health", api.health), Route("/metrics", api.metrics),
              Route("/v1/models", api.models), Route("/v1/models/{model_id:path}", api.model),
              Route("/v1/chat/completions", api.chat, methods=["POST"]),
              Route("/v1/completions", api.completions, methods=["POST"])]
    handlers = {P.APIError: _api_error, HTTPException: _http_error, Exception: _internal_error}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()  # loads the model in the background: /health answers 503 until it is ready
        yield
        worker.stop(0.0)  # uvicorn has already let running requests finish within its grace period

    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


async def _api_error(request: Request, exc: P.APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    err = P.APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind)
    return JSONResponse(err.body(), status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    err = P.APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
    return JSONResponse(err.body(), status_code=500)


class _Api:
    def __init__(self, worker: EngineWorker, metrics: Metrics, api_key: str | None, max_body: int):
        self.worker, self.m, self.api_key, self.max_body = worker, metrics, api_key, max_body

    # ---- plain endpoints -------------------------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        if self.worker.load_error:
            return JSONResponse({"status": "error", "error": self.worker.load_error}, status_code=503)
        if not self.worker.ready:
            return JSONResponse({"status": "closing" if self.worker.closing else "loading"}, status_code=503)
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

    async def _complete(self, request: Request, kind: str) -> Response:
        endpoint = request.url.path
        try:
            served = self._served(request)
            body = await self._json_body(request)
            parsed = P.parse_chat(body) if kind == "chat" else P.parse_completion(body)
            if not self._known_model(parsed.model, served):
                raise P.model_not_found(parsed.model)
            prompt, echo = self._prompt(parsed, served, kind)
            ereq = self._engine_request(parsed.options, prompt, served)
            reply = Reply(kind, served.model_id, len(prompt))
            if parsed.options.stream:
                events = self.worker.stream(ereq)
                first = await anext(events)  # QueueFull surfaces here, before the 200 is sent
                self.m.requests.labels(endpoint, "200").inc()
                gen = self._sse(reply, parsed.options, served, events, first, echo, ereq)
                return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            result = await self._collect(reply, parsed.options, served, self.worker.stream(ereq), echo)
        except P.APIError as err:
            self.m.requests.labels(endpoint, str(err.status)).inc()
            raise
        except QueueFull:
            self.m.requests.labels(endpoint, "429").inc()
            raise P.overloaded()
        self.m.requests.labels(endpoint, "200").inc()
        return JSONResponse(result)

    def _served(self, request: Request) -> Served:
        self._check_key(request)
        if self.worker.load_error:
            raise P.unavailable(f"the model failed to load: {self.worker.load_error}")
        if not self.worker.ready:
            raise P.unavailable("shutting down" if self.worker.closing else "the model is still loading")
        return self.worker.served

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(given.encode(), self.api_key.encode()):
            raise P.unauthorized()

    async def _json_body(self, request: Request) -> object:
        raw, size = bytearray(), 0
        async for part in request.stream():  # read to the end even when too large: clients expect an answer
            size += len(part)
            if size <= self.max_body:
                raw += part
        if size > self.max_body:
            raise P.too_large(self.max_body)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise P.malformed_json(str(exc)) from None

    @staticmethod
    def _known_model(name: str, served: Served) -> bool:
        return name in (served.model_id, served.lm.path.name, str(served.lm.path))

    def _prompt(self, parsed, served: Served, kind: str) -> tuple[list[int], str]:
        """Prompt token ids, and the prompt text to echo (completions with echo only)."""
        tok = served.tokenizer
        if kind == "chat":
            try:
                rendered = served.template.render(list(parsed.messages), add_generation_prompt=True)
            except MoestreamError as exc:
                raise P.APIError(400, f"cannot apply the chat template: {exc}", param="messages") from None
            ids = tok.encode(rendered, add_bos=None)
            ids = ids[1:] if len(ids) > 1 and ids[0] == ids[1] == tok.bos_id else ids
            echo = ""
        elif isinstance(parsed.prompt, str):
            ids, echo = tok.encode(parsed.prompt, add_bos=None), parsed.prompt
        else:
            ids = list(parsed.prompt)
            if max(ids) >= tok.vocab_size:
                raise P.APIError(400, f"token id {max(ids)} is outside the vocabulary ({tok.vocab_size})", param="prompt")
            echo = tok.decode(ids)
        self._check_context(len(ids), served, "messages" if kind == "chat" else "prompt")
        return ids, (echo if kind == "text" and parsed.echo else "")

    @staticmethod
    def _check_context(n: int, served: Served, param: str) -> None:
        if n >= served.context_length:
            raise P.APIError(400, f"the prompt has {n} tokens but the context holds {served.context_length} "
                             "(prompt and completion together); shorten the prompt", param=param,
                             code="context_length_exceeded")

    @staticmethod
    def _engine_request(opt: P.GenerationOptions, prompt: list[int], served: Served) -> EngineRequest:
        room = served.context_length - len(prompt)
        max_new = min(opt.max_tokens or room, room)
        return EngineRequest(prompt, opt.sampling, max_new, on_event=lambda ev: None,
                             stop_ids=frozenset(served.tokenizer.eog_ids),
                             top_logprobs=opt.top_logprobs if opt.logprobs else None)

    # ---- producing the reply ---------------------------------------------------------------------------------

    async def _collect(self, reply: Reply, opt: P.GenerationOptions, served: Served,
                       events: AsyncIterator, echo: str) -> dict:
        text = TextStream(served.tokenizer, opt.stop)
        parts = [echo]
        try:
            async for ev in events:
                parts.append(self._absorb(reply, ev, text))
                if reply.finish_reason:
                    break
        finally:
            await events.aclose()  # a stop string ended it early: cancel the rest
        reply.text = "".join(parts)
        return whole(reply, served.tokenizer, opt.logprobs, len(echo))

    async def _sse(self, reply: Reply, opt: P.GenerationOptions, served: Served, events: AsyncIterator,
                   first, echo: str, ereq: EngineRequest) -> AsyncIterator[bytes]:
        text, tok = TextStream(served.tokenizer, opt.stop), served.tokenizer
        try:
            if reply.kind == "chat" or echo:
                yield _sse(chunk(reply, echo, tok, first=True))
            ev = first
            while ev is not None:
                piece = self._absorb(reply, ev, text)
                token_events = [ev] if opt.logprobs and ev.token is not None else None
                if piece or token_events:
                    yield _sse(chunk(reply, piece, tok, token_events))
                if reply.finish_reason:
                    break
                ev = await anext(events, None)
            yield _sse(chunk(reply, None, tok, finish_reason=reply.finish_reason))
            if opt.include_usage:
                yield _sse(usage_chunk(reply))
            yield b"data: [DONE]\n\n"
        except P.APIError as err:  # the engine failed mid-stream: say so in the stream, then end it
            yield _sse(err.body())
            yield b"data: [DONE]\n\n"
        finally:
            self.worker.scheduler.cancel(ereq)  # the client left early, or we are done: free the slot

    def _absorb(self, reply: Reply, ev, text: TextStream) -> str:
        """Account one engine event into `reply`; returns the text it adds."""
        if ev.finish_reason in ("error", "cancelled"):
            raise P.APIError(500 if ev.finish_reason == "error" else 503,
                             ev.error or "the server is shutting down; the request was cancelled",
                             "server_error")
        piece = ""
        if ev.token is not None:
            reply.completion_tokens += 1
            self.m.on_token()
            piece = text.push(ev.token)
            if ev.logprob is not None:
                reply.logprobs.append(ev)
        if text.stopped:
            reply.finish_reason = "stop"
        elif ev.finish_reason:
            reply.finish_reason = ev.finish_reason
            piece += text.flush()
        if reply.finish_reason:
            self.m.prompt_tokens.inc(reply.prompt_tokens)
        return piece


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def _model_card(served: Served) -> dict:
    return {"id": served.model_id, "object": "model", "created": served.created, "owned_by": "moestream"}
