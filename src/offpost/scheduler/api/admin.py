"""``/v1/admin/*``: operators' view across every client (admin keys only; 403 otherwise)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from offpost.models import Credential, CredentialStatus
from offpost.scheduler.api.deps import AdminDep, NowDep, SessionDep
from offpost.scheduler.api.schemas import CredentialList, CredentialOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get(
    "/credentials",
    response_model=CredentialList,
    summary="Credentials of every client, by status or nearing expiry",
    responses={401: {"description": "no or bad API key"}, 403: {"description": "not an admin key"}},
)
def admin_credentials(
    _: AdminDep,
    session: SessionDep,
    now: NowDep,
    status: Annotated[CredentialStatus | None, Query()] = None,
    expiring_within_hours: Annotated[int | None, Query(ge=0, le=24 * 366)] = None,
) -> CredentialList:
    query = select(Credential).order_by(Credential.expires_at, Credential.id)
    if status is not None:
        query = query.where(Credential.status == status)
    if expiring_within_hours is not None:
        query = query.where(
            Credential.expires_at.is_not(None),
            Credential.expires_at <= now + timedelta(hours=expiring_within_hours),
        )
    return CredentialList(credentials=[CredentialOut.of(c) for c in session.scalars(query)])
