"""Credentials: the token store (the OpenAPI document, docs/design.md).

A :class:`Credential` is one Facebook user as seen by one API client: the
long-lived user token (encrypted), when it expires, what it may do, and the
user's Pages with their Page tokens (:class:`CredentialPage`, encrypted too).
A client that submits a fresh token for the same Facebook user renews the
same row, which the unique ``(client_id, fb_user_id)`` guarantees.

Deleting a credential keeps the row (posts refer to it) but wipes every token:
``user_token`` and each ``page_token`` become ``NULL`` and ``status`` becomes
``deleted``; see :meth:`Credential.forget_tokens`.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from offpost.models.base import Base, Timestamps, check_in
from offpost.models.ids import ID_LENGTH, IdPrefix, id_factory
from offpost.models.types import EncryptedToken, StrEnumType


class CredentialStatus(enum.StrEnum):
    """Where a credential stands (the OpenAPI document)."""

    #: The token works.
    ACTIVE = "active"
    #: It expires within the refresh margin and could not be refreshed.
    EXPIRING = "expiring"
    #: Graph rejected it (expired, revoked, password changed...): a fresh token is needed.
    NEEDS_REAUTH = "needs_reauth"
    #: The client deleted it; its tokens are wiped.
    DELETED = "deleted"


class Credential(Timestamps, Base):
    """One Facebook user's long-lived token, held for one API client."""

    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("client_id", "fb_user_id"),
        check_in("status", CredentialStatus, "status"),
        # The expiry sweep: "active credentials that expire before <margin>".
        Index("ix_credentials_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(
        String(ID_LENGTH), primary_key=True, default=id_factory(IdPrefix.CREDENTIAL)
    )
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("clients.id"))
    fb_user_id: Mapped[str] = mapped_column(String(64))
    #: The long-lived user token; ``None`` once the credential is deleted.
    user_token: Mapped[str | None] = mapped_column(EncryptedToken, default=None)
    #: ``None`` when Graph gave no expiry (a token that does not expire).
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    data_access_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[CredentialStatus] = mapped_column(
        StrEnumType(CredentialStatus), default=CredentialStatus.ACTIVE
    )
    #: When offpost last asked Graph about this token (debug_token or a call).
    last_checked_at: Mapped[datetime | None] = mapped_column(default=None)

    # selectin: a credential is almost always shown with its Pages, and a
    # session is usually closed before the object is serialised.
    pages: Mapped[list[CredentialPage]] = relationship(
        back_populates="credential",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="CredentialPage.page_id",
    )

    def page(self, page_id: str) -> CredentialPage | None:
        """The Page ``page_id`` of this credential, or ``None`` if the user has no such Page."""
        return next((p for p in self.pages if p.page_id == page_id), None)

    def forget_tokens(self) -> None:
        """Wipe the user token and every Page token and mark the credential deleted.

        The caller commits; the posts of the credential are the caller's business.
        """
        self.user_token = None
        for page in self.pages:
            page.page_token = None
        self.status = CredentialStatus.DELETED

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and tracebacks.
        return (
            f"Credential(id={self.id!r}, fb_user_id={self.fb_user_id!r}, "
            f"status={self.status.value if self.status else None!r})"
        )


class CredentialPage(Timestamps, Base):
    """A Page the credential's user manages, with its Page token.

    The primary key is ``(credential_id, page_id)``: replacing a credential's
    Page list after a refresh then updates rows in place instead of inserting a
    duplicate before the old row is deleted.
    """

    __tablename__ = "credential_pages"

    credential_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True
    )
    page_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    #: The Page token derived from the user token; ``None`` once wiped.
    page_token: Mapped[str | None] = mapped_column(EncryptedToken, default=None)

    credential: Mapped[Credential] = relationship(back_populates="pages")

    def __repr__(self) -> str:
        return f"CredentialPage(credential_id={self.credential_id!r}, page_id={self.page_id!r})"
