"""``GET /v1/quotas``: what the calling client may use, and how much of it it uses now.

A client sees its own quotas only; operators see every client's on
``GET /v1/admin/clients`` and change them there (docs/quotas.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from offpost.api.deps import ClientDep, NowDep, SessionDep, SettingsDep
from offpost.api.schemas import QuotasOut
from offpost.posts import quotas
from offpost.posts.quotas import ClientQuotas, QuotaDefaults

router = APIRouter(prefix="/v1/quotas", tags=["quotas"])

_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "no or bad API key"}}


@router.get(
    "",
    response_model=QuotasOut,
    summary="This client's quotas and its use of them",
    responses=_AUTH,
)
def get_quotas(
    client: ClientDep, session: SessionDep, settings: SettingsDep, now: NowDep
) -> QuotasOut:
    use = quotas.usage(session, client.id, now)
    return QuotasOut.of(ClientQuotas.of(client, QuotaDefaults.of(settings), use))
