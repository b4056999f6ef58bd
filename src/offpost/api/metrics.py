"""``GET /metrics``: Prometheus text format, no authentication (the OpenAPI document).

The numbers come from :class:`offpost.api.exporter.MetricsExporter`;
this is only the route. It runs in the thread pool: a scrape reads the database.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from offpost.api.exporter import MetricsExporter

router = APIRouter(tags=["health"])

#: What ``generate_latest`` writes: the classic text format, which every Prometheus reads.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {TEXT_FORMAT: {}}, "description": "text format 0.0.4"}},
)
def metrics(request: Request) -> Response:
    exporter: MetricsExporter = request.app.state.metrics
    return Response(exporter.render(), media_type=TEXT_FORMAT)
