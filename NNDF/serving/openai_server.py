"""`run.py serve --api openai`: one model behind an OpenAI-compatible HTTP server (FastAPI on uvicorn).

    GET  /v1/models             the one served model (--served-model-name, default the variant)
    POST /v1/completions        prompt(s) -> text; stream (SSE), logprobs and echo (decoder-only)
    POST /v1/chat/completions   messages -> the assistant's answer, through the chat template
    GET  /health                200 while serving
    GET  /metrics               Prometheus text (NNDF/serving/metrics.py)

The HTTP side (asyncio) checks and parses requests (openai_protocol.py) and queues one job per prompt
with a scheduler that owns the model on a thread of its own: continuous batching for decoder-only
models on onnxrt and trt with the KV cache (continuous.py), batching per arrival for the rest
(arrivals.py). The scheduler hands events back through the event loop; a client that goes away
cancels its jobs, which frees their rows at the next step boundary. SIGTERM (or Ctrl-C) stops
accepting connections, lets in-flight requests finish (up to --drain-timeout) and exits 0.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at runtime.
import asyncio
import json
import secrets
import signal
import socket
import time
from functools import partial

from NNDF.base.config import RunConfig, ServeSettings
from NNDF.base.errors import UsageError
from NNDF.serving.jobs import Failed, Finished, Job, PromptScored, QueueFull, Scheduler, Tokens
from NNDF.serving.metrics import ServerMetrics
from NNDF.serving.openai_protocol import (ApiError, LogprobsBuilder, ParsedRequest, ServedModel, chat_choice,
                                          chat_delta, chunk, completion_choice, parse, response, usage)

RETRY_AFTER_S = 1


# --------------------------------------------------------------------------- one request's jobs
class Exchange:
    """The jobs of one request, and their events as the request's handler reads them."""

    def __init__(self, parsed: ParsedRequest, model: ServedModel, metrics: ServerMetrics, arrived: float):
        self.parsed, self.model, self.metrics, self.arrived = parsed, model, metrics, arrived
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs = [Job(ids, parsed.settings, partial(self._emit, i), parsed.stop, parsed.logprobs, parsed.echo,
                         arrived) for i, ids in enumerate(parsed.prompts)]
        self._first: dict[int, float] = {}
        self.open = set(range(len(self.jobs)))

    def _emit(self, index: int, event) -> None:
        """Called on the scheduler's thread: metrics now (a gone client reads no more events), then the event."""
        now = time.perf_counter()
        if isinstance(event, Tokens) and event.tokens and index not in self._first:
            self._first[index] = now - self.arrived
        elif isinstance(event, Finished):
            self.metrics.outcome(event.reason)
            self.metrics.job_done(event.prompt_tokens, event.completion_tokens, self._first.get(index), now - self.arrived)
            self.metrics.e2e.observe(now - self.arrived)
        elif isinstance(event, Failed):
            self.metrics.outcome("error")
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        except RuntimeError:   # the event loop is closed: the server has stopped
            pass

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled.set()

    async def next(self):
        index, event = await self.queue.get()
        if isinstance(event, (Finished, Failed)):
            self.open.discard(index)
        return index, event


# --------------------------------------------------------------------------- the app
def build_app(model: ServedModel, scheduler: Scheduler, s: ServeSettings, metrics: ServerMetrics):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    app = FastAPI(title="hf-trt-toolkit", docs_url=None, redoc_url=None, openapi_url=None)

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):   # unknown routes and methods, as OpenAI-style errors too
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", None,
                              codes.get(exc.status_code)))

    @app.exception_handler(Exception)
    async def server_error(request, exc):
        return error(ApiError(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}", None, "internal_error"))

    def check_key(request: Request) -> None:
        if s.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), s.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", None,
                           "invalid_api_key", {"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > s.max_request_bytes:
            raise ApiError(413, f"the request body of {declared} bytes is over the {s.max_request_bytes}-byte limit",
                           None, "request_too_large")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > s.max_request_bytes:
                raise ApiError(413, f"the request body is over the {s.max_request_bytes}-byte limit", None,
                               "request_too_large")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({str(e)[:120]})", None, "invalid_json") from None

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            check_key(request)
        except ApiError as e:
            return error(e)
        return {"object": "list", "data": [model.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str, request: Request):
        try:
            check_key(request)
            if name != model.name:
                raise ApiError(404, f"The model `{name}` does not exist; this server serves `{model.name}`", "model",
                               "model_not_found")
        except ApiError as e:
            return error(e)
        return model.model_card()

    async def generate(request: Request, chat: bool):
        arrived = time.perf_counter()
        try:
            check_key(request)
            parsed = await run_in_threadpool(parse, await read_json(request), model, chat)   # tokenizing takes time
            if len(parsed.prompts) > s.max_queue:    # could never be queued at once: not a reason to retry
                raise ApiError(400, f"{len(parsed.prompts)} prompts in one request; this server queues at most "
                                    f"{s.max_queue} (--max-queue)", "prompt", "too_many_prompts")
        except ApiError as e:
            metrics.outcome("invalid")
            return error(e)
        exchange = Exchange(parsed, model, metrics, arrived)
        try:
            scheduler.submit(exchange.jobs)
        except QueueFull as e:
            metrics.outcome("rejected")
            return error(ApiError(503, f"the server is busy: {e}; retry later", None, "queue_full",
                                  {"Retry-After": str(RETRY_AFTER_S)}))
        if parsed.stream:
            return StreamingResponse(_stream(exchange), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(exchange, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def _collect(exchange: Exchange, request: Request):
        """A whole response; the jobs are cancelled if the client goes away meanwhile."""
        parsed = exchange.parsed
        n = len(exchange.jobs)
        texts, reasons, counts = [""] * n, [None] * n, [0] * n
        builders = [LogprobsBuilder(model.tokenizer) if parsed.logprobs is not None else None for _ in range(n)]
        for i in range(n):
            if parsed.echo:
                texts[i] = parsed.texts[i]
        while exchange.open:
            try:
                index, event = await asyncio.wait_for(exchange.next(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    exchange.cancel()
                    return Response(status_code=499)
                continue
            if isinstance(event, Failed):
                exchange.cancel()
                return error(ApiError(500, event.message, None, "generation_failed"))
            _apply(event, index, texts, reasons, counts, builders, parsed)
        if parsed.chat:
            choices = [chat_choice(i, texts[i], reasons[i]) for i in range(n)]
        else:
            choices = [completion_choice(i, texts[i], reasons[i], b.take() if b else None) for i, b in enumerate(builders)]
        prompt_tokens = sum(len(p) for p in parsed.prompts)
        return JSONResponse(response(parsed, model, choices, usage(prompt_tokens, sum(counts))))

    async def _stream(exchange: Exchange):
        """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
        parsed = exchange.parsed
        n = len(exchange.jobs)
        builders = [LogprobsBuilder(model.tokenizer) if parsed.logprobs is not None else None for _ in range(n)]
        counts = [0] * n

        def sse(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        try:
            if parsed.chat:
                yield sse(chunk(parsed, model, [chat_delta(i, "", None, first=True) for i in range(n)]))
            elif parsed.echo and parsed.logprobs is None:   # with logprobs, the prompt comes with its scores
                yield sse(chunk(parsed, model, [completion_choice(i, parsed.texts[i], None, None) for i in range(n)]))
            while exchange.open:
                index, event = await exchange.next()
                if isinstance(event, Failed):
                    yield sse(ApiError(500, event.message, None, "generation_failed").body())
                    break
                if isinstance(event, PromptScored):
                    for token, scored in zip(parsed.prompts[index], event.logprobs):
                        builders[index].add(token, scored)
                    yield sse(chunk(parsed, model, [completion_choice(index, parsed.texts[index], None,
                                                                      builders[index].take())]))
                elif isinstance(event, Tokens):
                    counts[index] += len(event.tokens)
                    builder = builders[index]
                    if builder is not None:
                        for token, scored in zip(event.tokens, event.logprobs):
                            builder.add(token, scored)
                    if event.text or (builder is not None and event.tokens):
                        yield sse(chunk(parsed, model, [chat_delta(index, event.text, None) if parsed.chat else
                                                        completion_choice(index, event.text, None,
                                                                          builder.take() if builder else None)]))
                elif isinstance(event, Finished):
                    yield sse(chunk(parsed, model, [chat_delta(index, None, event.reason) if parsed.chat else
                                                    completion_choice(index, "", event.reason, None)]))
            if parsed.include_usage:
                yield sse(chunk(parsed, model, [], usage(sum(len(p) for p in parsed.prompts), sum(counts))))
            yield "data: [DONE]\n\n"
        finally:
            if exchange.open:     # the client went away mid-stream (or the stream failed): free the rows
                exchange.cancel()

    return app


def _apply(event, index, texts, reasons, counts, builders, parsed) -> None:
    builder = builders[index]
    if isinstance(event, PromptScored):
        for token, scored in zip(parsed.prompts[index], event.logprobs):
            builder.add(token, scored)
    elif isinstance(event, Tokens):
        texts[index] += event.text
        counts[index] += len(event.tokens)
        if builder is not None:
            for token, scored in zip(event.tokens, event.logprobs):
                builder.add(token, scored)
    elif isinstance(event, Finished):
        reasons[index] = event.reason


# --------------------------------------------------------------------------- serving
def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound now: a port in use is one line before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"--port {port} on {host} is in use or not allowed ({e.strerror})",
                         "stop what holds it or pass another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_installed() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("serve --api openai needs FastAPI, uvicorn and prometheus-client",
                         'pip install -e ".[serve]"') from None


def run(cfg: RunConfig, model: ServedModel, scheduler: Scheduler, description: str, sock: socket.socket) -> dict:
    """Serve on `sock` (listening_socket) until SIGTERM or Ctrl-C, then drain and stop the scheduler. The
    action binds the socket, opens the model and makes the scheduler (NNDF/actions/serving.py), so this
    module needs nothing above the serving layer."""
    import uvicorn

    s = cfg.serve
    metrics = ServerMetrics(scheduler.running, scheduler.waiting)
    app = build_app(model, scheduler, s, metrics)
    config = uvicorn.Config(app, log_level="info" if cfg.verbose else "warning", access_log=cfg.verbose,
                            timeout_graceful_shutdown=s.drain_timeout_s, lifespan="off")
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT while it runs and raises them again after draining; what it then
    # finds installed decides the exit. Ignoring them there makes a drained stop exit 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler.start()
    try:
        print(f"serving {model.name} ({description}) at http://{s.host}:{s.port}/v1 (metrics /metrics, "
              f"health /health); SIGTERM or Ctrl-C stops after in-flight requests", flush=True)
        server.run(sockets=[sock])
    finally:
        scheduler.stop()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    return {"action": "serve", "api": "openai", "model": model.name, "batching": description}
