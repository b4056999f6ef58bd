"""``/v1/credentials``: the token store's HTTP face (the OpenAPI document).

A client sees only its own credentials; another client's id answers 404. The
long-lived token and the Page tokens never leave: responses are built from
:class:`CredentialOut`, which has no token field.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import select

from offpost.api.deps import ClientDep, GraphDep, NowDep, SessionDep, SettingsDep
from offpost.api.limits import retry_after_header
from offpost.api.problems import ProblemError
from offpost.api.schemas import (
    ClientCodeCreate,
    ClientCodeOut,
    CredentialCreate,
    CredentialList,
)
from offpost.graph.client import GraphClient
from offpost.graph.errors import GraphAuthError, GraphError, GraphRejectedError
from offpost.models import Credential, CredentialStatus
from offpost.settings import Settings
from offpost.tokens.death import mark_user_token_dead
from offpost.tokens.expiry import ExpirySweep
from offpost.tokens.intake import (
    GraphUnavailableError,
    MissingPermissionsError,
    TokenRejectedError,
    forget_credential,
    take_in_token,
)
from offpost.views import CredentialOut

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/credentials", tags=["credentials"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad API key"},
    404: {"description": "no such credential for this client"},
}


def intake_problem(exc: TokenRejectedError | GraphUnavailableError) -> ProblemError:
    """The API's answer when a submitted token cannot be taken in."""
    if isinstance(exc, MissingPermissionsError):
        return ProblemError(
            "missing_permissions",
            str(exc),
            errors=[{"field": "access_token", "message": str(exc)}],
            missing_permissions=list(exc.missing),
        )
    if isinstance(exc, TokenRejectedError):
        return ProblemError(
            "invalid_token",
            str(exc),
            errors=[{"field": "access_token", "message": str(exc)}],
        )
    return ProblemError(
        "graph_unavailable", str(exc), headers=retry_after_header(exc.retry_after_s)
    )


def load_own_credential(session: SessionDep, client_id: str, credential_id: str) -> Credential:
    """The client's credential ``credential_id``, or 404 (also for another client's id)."""
    credential = session.scalars(
        select(Credential).where(Credential.id == credential_id, Credential.client_id == client_id)
    ).one_or_none()
    if credential is None:
        raise ProblemError("not_found", f"no credential {credential_id}")
    return credential


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialOut,
    summary="Hand over a short-lived user token",
    responses={
        200: {"model": CredentialOut, "description": "renewed the credential of this user"},
        422: {"description": "invalid_token, missing_permissions or invalid_request"},
        503: {"description": "graph_unavailable"},
        **_ERRORS,
    },
)
def create_credential(
    body: CredentialCreate,
    response: Response,
    client: ClientDep,
    session: SessionDep,
    graph: GraphDep,
    settings: SettingsDep,
    now: NowDep,
) -> CredentialOut:
    assert settings.app_id is not None  # checked when the app was built
    try:
        credential, created = take_in_token(
            session,
            graph,
            app_id=settings.app_id,
            client_id=client.id,
            short_token=body.access_token,
            now=now,
            warn_within=settings.warn_within(),
        )
    except (TokenRejectedError, GraphUnavailableError) as exc:
        raise intake_problem(exc) from exc
    if not created:
        response.status_code = status.HTTP_200_OK
    return CredentialOut.of(credential)


@router.get(
    "", response_model=CredentialList, summary="This client's credentials", responses=_ERRORS
)
def list_credentials(client: ClientDep, session: SessionDep) -> CredentialList:
    credentials = session.scalars(
        select(Credential)
        .where(Credential.client_id == client.id)
        .order_by(Credential.created_at.desc(), Credential.id.desc())
    ).all()
    return CredentialList(credentials=[CredentialOut.of(c) for c in credentials])


@router.get(
    "/{credential_id}", response_model=CredentialOut, summary="One credential", responses=_ERRORS
)
def get_credential(credential_id: str, client: ClientDep, session: SessionDep) -> CredentialOut:
    return CredentialOut.of(load_own_credential(session, client.id, credential_id))


@router.post(
    "/{credential_id}/check",
    response_model=CredentialOut,
    summary="Check the user token and every Page token now",
    responses={
        409: {"description": "the credential is deleted"},
        503: {"description": "graph_unavailable"},
        **_ERRORS,
    },
)
def check_credential(
    credential_id: str,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    graph: GraphDep,
    settings: SettingsDep,
    now: NowDep,
) -> CredentialOut:
    """What the daily sweep does for this credential, now; answers its health as ``GET`` does."""
    credential = load_own_credential(session, client.id, credential_id)
    if credential.status is CredentialStatus.DELETED:
        raise ProblemError("conflict", f"credential {credential_id} is deleted")
    if not check_now(request, graph, settings, credential_id, now):
        raise intake_problem(GraphUnavailableError("Graph could not check the tokens now"))
    session.expire_all()
    return CredentialOut.of(load_own_credential(session, client.id, credential_id))


def check_now(
    request: Request, graph: GraphClient, settings: Settings, credential_id: str, now: datetime
) -> bool:
    """The daily check for one credential, now (in its own transaction); whether it ran."""
    sweep = ExpirySweep.from_settings(request.app.state.sessions, graph, settings)
    return sweep.check(credential_id, now) != "skipped"


@router.delete(
    "/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Forget the tokens; cancel the posts not yet published",
    responses=_ERRORS,
)
def delete_credential(
    credential_id: str, client: ClientDep, session: SessionDep, now: NowDep
) -> Response:
    credential = load_own_credential(session, client.id, credential_id)
    canceled = forget_credential(session, credential, now)
    logger.info(
        "credential deleted, %d posts canceled",
        canceled,
        extra={"action": "credential_deleted", "credential_id": credential_id},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{credential_id}/client-code",
    response_model=ClientCodeOut,
    summary="A code the client redeems for its own long-lived token",
    responses={409: {"description": "the credential has no usable token"}, **_ERRORS},
)
def create_client_code(
    credential_id: str,
    body: ClientCodeCreate,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    graph: GraphDep,
    settings: SettingsDep,
    now: NowDep,
) -> ClientCodeOut:
    credential = load_own_credential(session, client.id, credential_id)
    if (
        credential.user_token is None
        or credential.status is CredentialStatus.DELETED
        or credential.user_token_dead_at is not None
    ):
        # A code is made from the user token: known dead, there is no asking again.
        raise ProblemError(
            "conflict",
            f"credential {credential_id} is {credential.status.value} and its user token "
            "no longer works: submit a fresh token",
        )
    try:
        code = graph.client_code(credential.user_token, body.redirect_uri)
    except GraphAuthError as exc:
        # The stored user token is dead: check the Page tokens too, as the daily check
        # would (docs/tokens.md); a live Page token still publishes.
        session.rollback()
        if not check_now(request, graph, settings, credential.id, now):
            mark_user_token_dead(session, credential.id, now)
            session.commit()
        raise ProblemError(
            "conflict",
            f"credential {credential_id} needs a fresh token: Graph rejected it ({exc.message})",
        ) from exc
    except GraphRejectedError as exc:
        raise ProblemError(
            "invalid_request",
            f"Graph refused the client code: {exc.message}",
            errors=[{"field": "redirect_uri", "message": exc.message}],
        ) from exc
    except GraphError as exc:
        raise intake_problem(
            GraphUnavailableError(f"the Graph API could not be reached: {exc.message}")
        ) from exc
    return ClientCodeOut(code=code.code)
