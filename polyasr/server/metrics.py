"""The server's Prometheus metrics, in a registry of their own (two servers in one process, as in
the tests, do not share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """requests and errors by route and status; per model: queue depth, inputs per model call,
    audio seconds, request latency, and requests dropped before decoding (timeout, client gone)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("polyasr_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("polyasr_errors", "Requests answered with an error", ["status", "code"], registry=r)
        self.in_flight = Gauge("polyasr_requests_in_flight", "Transcription requests being answered", registry=r)
        self.queue_depth = Gauge(
            "polyasr_queue_depth", "Requests waiting for the model's worker", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "polyasr_batch_size", "Inputs decoded in one model call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.audio_seconds = Counter("polyasr_audio_seconds", "Seconds of audio transcribed", ["model"], registry=r)
        self.latency = Histogram(
            "polyasr_request_latency_seconds",
            "From a transcription request's arrival to its answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped = Counter(
            "polyasr_dropped", "Requests dropped before their answer", ["model", "reason"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
