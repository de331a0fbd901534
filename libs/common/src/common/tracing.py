"""OpenTelemetry tracing: off by default, switched on by the standard ``OTEL_*`` variables.

Tracing starts when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) or
``OTEL_TRACES_EXPORTER`` is set, unless ``OTEL_SDK_DISABLED=true``. Everything else
(endpoint, headers, sampler, ``OTEL_SERVICE_NAME``) is read by the SDK itself.

The trace context crosses the bus inside the message envelope (its ``trace`` field holds
the W3C ``traceparent``), so one trace spans the HTTP request that placed an order and every
message of its saga in the three services. When tracing is off, the API's no-op tracer makes
all of this cost next to nothing.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

if TYPE_CHECKING:
    from fastapi import FastAPI

tracer = trace.get_tracer("common.bus")
SWITCHES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)


def tracing_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(os.environ.get(name) for name in SWITCHES)


def configure_tracing(service_name: str) -> bool:
    """Install the SDK's tracer provider if the environment asks for tracing."""
    if not tracing_enabled():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def instrument_app(app: "FastAPI") -> None:
    """Server spans for every request, continuing a caller's ``traceparent``."""
    if tracing_enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def current_context_carrier() -> dict[str, str]:
    """The current trace context as W3C headers, for a message envelope."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def message_span(name: str, carrier: dict[str, str], **attributes: str) -> Iterator[Span]:
    """A consumer span, child of the span that published the message."""
    with tracer.start_as_current_span(
        name,
        context=propagate.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "redis_streams", **attributes},
    ) as span:
        yield span
