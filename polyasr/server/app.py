"""The HTTP side: FastAPI routes in OpenAI's shapes, API-key and upload-size checks before a body is
read, one `ModelWorker` per loaded model (started and drained by the app's lifespan).

A transcription request: the multipart form is streamed (the upload spools to a temporary file;
a body past the limit stops the read with 413), its fields are checked, the audio is decoded in a
thread-pool thread, and a `Job` goes to the model's worker. The handler then awaits the job's
future, the request's deadline and the client's disconnect, whichever comes first; a request that
times out or whose client left is dropped from its worker's queue or batch.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from polyasr.audio import load_audio
from polyasr.errors import AsrError, AudioError, InvalidOptionError, ModelNotFoundError
from polyasr.host_memory import keep_freed_memory
from polyasr.options import TranscribeOptions
from polyasr.registry import get_spec
from polyasr.server.batching import Job, ModelWorker, QueueFull, ShuttingDown
from polyasr.server.metrics import Metrics
from polyasr.server.openai_format import ApiError, api_error, check_word_request, parse_request, render, stream_events

log = logging.getLogger("polyasr.server")
OPEN_ROUTES = ("/health",)  # answered without an API key (load balancers probe it)
ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/metrics", "/health")
RETRY_AFTER_SECS = 1


@dataclass(frozen=True)
class ServerConfig:
    """`polyasr serve`'s settings. max_batch: requests decoded in one model call; batch_size: pieces
    of audio per forward pass inside a call (`TranscribeOptions.batch_size`; None: max_batch). It
    picks Whisper's decoding: above 1, speech pieces, which requests can share; 1, the sequential
    window loop, one request per call. max_wait_ms: how long the oldest waiting request waits for
    others to share its batch; max_queue: requests waiting per model before 503; max_upload_mb:
    request body limit (413 past it); request_timeout: seconds from arrival to answer (504 past it).
    aligner: a forced aligner that times the words of every model's word-granularity answers;
    aligner_path: its checkpoint, or that of the aligner a model declares (Qwen3-ASR's words)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    batch_size: int | None = None
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_upload_mb: float = 25.0
    request_timeout: float = 300.0
    aligner: str | None = None
    aligner_path: str | None = None

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidOptionError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "request_timeout"):
            if not getattr(self, name) > 0:
                raise InvalidOptionError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise InvalidOptionError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


class UploadTooLarge(Exception):
    """The request body grew past the limit while it was being read."""


def too_large(config: ServerConfig) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than the server's limit of {config.max_upload_mb:g} MB "
        "(polyasr serve --max-upload-mb); cut or compress the audio",
        param="file",
        code="file_too_large",
    )


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class Gate:
    """ASGI middleware in front of every route: the API key (constant-time compare), the request body
    limit (a declared Content-Length past it is refused before reading; a body that grows past it
    stops the read), and the requests counter by route and status."""

    def __init__(self, app, config: ServerConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics
        self.key = None if config.api_key is None else config.api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = {}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        headers = dict(scope["headers"])
        refusal = self._refusal(scope["path"], headers)
        if refusal is not None:
            self.metrics.errors.labels(str(refusal.status), refusal.code).inc()
            return await _error_response(refusal)(scope, receive, counted_send)
        await self.app(scope, self._limited(receive), counted_send)

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> ApiError | None:
        if self.key is not None and path not in OPEN_ROUTES:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                return ApiError(
                    401,
                    "missing or incorrect API key; send it as the header `Authorization: Bearer KEY`",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.config.max_upload_bytes:
            return too_large(self.config)
        return None

    def _limited(self, receive):
        limit, seen = self.config.max_upload_bytes, [0]

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise UploadTooLarge
            return message

        return limited_receive


class Server:
    """The app's state: config, metrics, a worker per loaded model id."""

    def __init__(self, engines: dict, config: ServerConfig):
        self.config, self.metrics, self.started = config, Metrics(), int(time.time())
        self.engines = engines
        self.workers = {
            name: ModelWorker(
                engine,
                name,
                max_batch=config.max_batch,
                max_wait=config.max_wait_ms / 1000,
                max_queue=config.max_queue,
                metrics=self.metrics,
            )
            for name, engine in engines.items()
        }
        # loaded with the models, so no request waits for an aligner to load
        self.word_aligners = {name: _word_aligner(engine, config) for name, engine in engines.items()}

    def worker(self, model: str) -> ModelWorker:
        try:
            name = get_spec(model).id
        except AsrError:
            name = model
        if name not in self.workers:
            raise ApiError(
                404,
                f"model {model!r} is not served here; this server has: {', '.join(self.workers)} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )
        return self.workers[name]

    async def audio(self, request: Request, task: str) -> Response:
        """POST /v1/audio/transcriptions and /translations."""
        arrived = time.monotonic()
        self.metrics.in_flight.inc()
        try:
            req, worker, audio = await self._read(request, task)
            loop = asyncio.get_running_loop()
            job = Job(audio, req.options, loop, loop.create_future())
            try:
                worker.submit(job)
            except (QueueFull, ShuttingDown) as e:
                why = "is full" if isinstance(e, QueueFull) else "is shutting down"
                raise ApiError(
                    503,
                    f"the server's queue for {worker.name} {why}; retry later",
                    type="server_error",
                    code="queue_full" if isinstance(e, QueueFull) else "shutting_down",
                    headers={"Retry-After": str(RETRY_AFTER_SECS)},
                ) from None
            result = await self._outcome(job, worker, request, arrived + self.config.request_timeout)
        finally:
            self.metrics.in_flight.dec()
        if result is None:  # the client left: nobody reads this
            return Response(status_code=499)
        self.metrics.audio_seconds.labels(worker.name).inc(result.audio_duration_secs)
        self.metrics.latency.labels(worker.name).observe(time.monotonic() - arrived)
        if req.stream and task == "transcribe":
            return StreamingResponse(iter(stream_events(result)), media_type="text/event-stream")
        body, media = render(result, req)
        return Response(body, media_type=media)

    async def _read(self, request: Request, task: str):
        """The form -> (AudioRequest, its model's worker, 16 kHz samples); ApiError for what is wrong."""
        try:
            form = await request.form(max_files=1)
        except UploadTooLarge:
            raise too_large(self.config) from None
        try:
            fields = {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form if k != "file"}
            batch_size, config = self.config.batch_size or self.config.max_batch, self.config
            req = parse_request(fields, task, batch_size, aligner=config.aligner, aligner_path=config.aligner_path)
            worker = self.worker(req.model)
            check_word_request(req, worker.engine.model, self.word_aligners[worker.name])
            try:
                worker.engine.check_options(req.options)
            except InvalidOptionError as e:
                raise api_error(e, param="language" if task == "transcribe" else None) from e
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "the form field 'file' (the audio file) is required", param="file")
            audio = await asyncio.to_thread(_decode_upload, upload)
        finally:
            await form.close()
        return req, worker, audio

    async def _outcome(self, job: Job, worker: ModelWorker, request: Request, deadline: float):
        """The job's result, None when the client disconnected first; ApiError 504 past the deadline."""
        gone = asyncio.ensure_future(_client_gone(request.receive))
        try:
            await asyncio.wait(
                {job.future, gone}, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
        if job.future.done():
            error = job.future.exception()
            if error is None:
                return job.future.result()
            if isinstance(error, AsrError):
                raise api_error(error) from error
            log.error("decoding failed", exc_info=error)
            raise ApiError(500, f"internal error while decoding: {error}", type="server_error", code="internal_error")
        worker.drop(job)
        job.future.cancel()
        left = gone.done() and not gone.cancelled()
        self.metrics.dropped.labels(worker.name, "disconnected" if left else "timeout").inc()
        if left:
            return None
        raise ApiError(
            504,
            f"no answer within the server's request timeout of {self.config.request_timeout:g} s "
            "(polyasr serve --request-timeout); send shorter audio or retry when the server is less busy",
            type="server_error",
            code="timeout",
        )

    def models(self) -> dict:
        data = [{"id": n, "object": "model", "created": self.started, "owned_by": "polyasr"} for n in self.workers]
        return {"object": "list", "data": data}


def _word_aligner(engine, config: ServerConfig) -> str | None:
    """The id of the forced aligner that times `engine`'s words, loaded now; None when the model
    times its own words (and no --aligner was given), or when the aligner it declares was not found
    and the server was not told where it is: its word requests then get a 400 that says how."""
    options = TranscribeOptions(word_timestamps=True, aligner=config.aligner, aligner_path=config.aligner_path)
    try:
        aligner = engine.aligner_for(options)
    except ModelNotFoundError:
        if config.aligner is not None or config.aligner_path is not None:
            raise
        return None
    return None if aligner is None else aligner.spec.id


async def _client_gone(receive) -> None:
    """Returns when the client disconnects (the body has been read, so receive() waits for that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _decode_upload(upload: UploadFile):
    """The spooled upload -> 16 kHz mono float32 via `load_audio`, errors naming the upload's file name."""
    name = upload.filename or "file"
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix[:16]) as tmp:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, tmp, 2**20)
        tmp.flush()
        try:
            return load_audio(tmp.name)
        except AudioError as e:
            raise api_error(type(e)(name, e.reason)) from None


def create_app(engines: dict, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving `engines` ({model id: AsrEngine}); workers start with the app's lifespan
    and, at shutdown, finish what is queued before the app exits. A server process decodes batch
    after batch: its allocator keeps freed memory for the next (`keep_freed_memory`)."""
    keep_freed_memory()
    config = config or ServerConfig()
    server = Server(engines, config)

    @asynccontextmanager
    async def lifespan(app):
        for worker in server.workers.values():
            worker.start()
        yield
        for worker in server.workers.values():
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="polyasr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def on_api_error(request, err: ApiError):
        server.metrics.errors.labels(str(err.status), str(err.code)).inc()
        return _error_response(err)

    @app.exception_handler(HTTPException)
    async def on_http_error(request, exc: HTTPException):
        err = ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        server.metrics.errors.labels(str(err.status), str(err.code)).inc()
        return _error_response(err)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await server.audio(request, "transcribe")

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await server.audio(request, "translate")

    @app.get("/v1/models")
    async def models():
        return server.models()

    @app.get("/v1/models/{model}")
    async def model(model: str):
        return next(m for m in server.models()["data"] if m["id"] == server.worker(model).name)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(server.workers)}

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(Gate, config=config, metrics=server.metrics)
    return app


def run(engines: dict, config: ServerConfig) -> None:
    """Serve until SIGTERM / SIGINT: then stop accepting, answer what is in flight, and return."""
    import uvicorn

    uvicorn.run(create_app(engines, config), host=config.host, port=config.port, log_level="info")
