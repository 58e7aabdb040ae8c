"""`polyasr serve`: OpenAI's `/v1/audio/transcriptions` API over loaded polyasr models, with
dynamic batching (needs the `polyasr[server]` extra: FastAPI, uvicorn, python-multipart,
prometheus-client).

    from polyasr import AsrEngine
    from polyasr.server import ServerConfig, create_app
    app = create_app({"whisper-base": AsrEngine.from_model("whisper-base")}, ServerConfig(max_batch=8))

app.py: routes, API key, limits; batching.py: one worker thread per model; openai_format.py:
requests and answers in OpenAI's shapes; metrics.py: Prometheus metrics.
"""

from polyasr.server.app import ServerConfig, create_app, run

__all__ = ["ServerConfig", "create_app", "run"]
