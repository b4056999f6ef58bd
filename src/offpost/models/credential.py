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
    """Where a credential stands (docs/tokens.md). Posts depend on Page tokens, which
    outlive the user token: only ``needs_reauth`` (for the dead Pages) and ``deleted``
    stop posts."""

    #: The user token works and is not near its end; every Page token works.
    ACTIVE = "active"
    #: The user token ends within the warning window. Posts continue.
    EXPIRING = "expiring"
    #: The user token ended (or Graph no longer accepts it): offpost can no longer
    #: re-derive Page tokens or see new Pages. Posts continue on the live Page tokens.
    USER_TOKEN_EXPIRED = "user_token_expired"  # noqa: S105 - a status, not a password
    #: A Page token is dead and cannot be re-derived: that Page's posts wait for a
    #: fresh token; the other Pages' posts continue.
    NEEDS_REAUTH = "needs_reauth"
    #: The client deleted it; its tokens are wiped.
    DELETED = "deleted"


class PageTokenStatus(enum.StrEnum):
    """Whether a Page token works (docs/tokens.md)."""

    VALID = "valid"
    #: Graph rejected it and it could not be derived again: the Page's posts wait.
    DEAD = "dead"


#: The Page task a user needs to publish on a Page (Graph's ``tasks`` on ``/me/accounts``).
CREATE_CONTENT = "CREATE_CONTENT"


class Credential(Timestamps, Base):
    """One Facebook user's long-lived token, held for one API client."""

    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("client_id", "fb_user_id"),
        check_in("status", CredentialStatus, "status"),
        # Credentials by status and user-token end (the admin API's "expiring within").
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
        StrEnumType(CredentialStatus, 32), default=CredentialStatus.ACTIVE
    )
    #: When offpost last asked Graph about this token (debug_token or a call).
    last_checked_at: Mapped[datetime | None] = mapped_column(default=None)
    #: When Graph first said the user token is no longer valid (``None`` while it is):
    #: an expiry date offpost was not told of, or an invalidation that spared the Pages.
    user_token_dead_at: Mapped[datetime | None] = mapped_column(default=None)

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
    __table_args__ = (check_in("token_status", PageTokenStatus, "token_status"),)

    credential_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True
    )
    page_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    #: The Page token derived from the user token; ``None`` once wiped (or dead).
    page_token: Mapped[str | None] = mapped_column(EncryptedToken, default=None)
    token_status: Mapped[PageTokenStatus] = mapped_column(
        StrEnumType(PageTokenStatus), default=PageTokenStatus.VALID
    )
    #: The user's tasks on the Page as Graph listed them; ``None`` for a Page stored
    #: before offpost kept them (taken as able to post until the next check).
    tasks: Mapped[list[str] | None] = mapped_column(default=None)
    #: When offpost last asked Graph about this Page token.
    checked_at: Mapped[datetime | None] = mapped_column(default=None)

    credential: Mapped[Credential] = relationship(back_populates="pages")

    @property
    def can_create_content(self) -> bool:
        """Whether the user's role on the Page lets it publish (the CREATE_CONTENT task)."""
        return self.tasks is None or CREATE_CONTENT in self.tasks

    @property
    def postable(self) -> bool:
        """Whether posts can be published on this Page now."""
        return self.token_status is not PageTokenStatus.DEAD and self.can_create_content

    def __repr__(self) -> str:
        return f"CredentialPage(credential_id={self.credential_id!r}, page_id={self.page_id!r})"
