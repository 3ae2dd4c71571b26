"""Prometheus metrics of the HTTP API, labelled by server role and route."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "chromasnap_http_requests_total", "HTTP requests answered, by route and status",
    ["role", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "chromasnap_http_request_duration_seconds", "Time to answer an HTTP request, by route",
    ["role", "route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_ERRORS = Counter(
    "chromasnap_http_errors_total", "HTTP requests answered with an error, by Chroma error name",
    ["role", "route", "error"],
)
HTTP_FORWARDED = Counter(
    "chromasnap_http_forwarded_total", "Requests forwarded to another chromasnap service",
    ["role", "target", "status"],
)
