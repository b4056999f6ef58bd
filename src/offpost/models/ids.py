"""Prefixed random identifiers: ``post_4hT9q…``, ``cred_…``, ``sched_…``.

Ids are made in Python, not by the database, so a row's id is known before it
is inserted (a batch of posts, an idempotent answer, a log line) and the same
code works on SQLite and PostgreSQL. The prefix says what an id names, which
makes a pasted id self-explaining and lets the API answer 404 to an id of the
wrong kind without a query.

The random part is :data:`RANDOM_LENGTH` characters of ``[0-9A-Za-z]`` from
:mod:`secrets` (about 119 bits): unguessable, URL-safe, and easy to select with
a double click.
"""

from __future__ import annotations

import enum
import re
import secrets
import string

#: Characters of the random part: URL-safe and free of punctuation.
ALPHABET = string.digits + string.ascii_letters
#: Length of the random part; 62**20 is about 2**119.
RANDOM_LENGTH = 20
#: Length of the ``String`` columns that hold ids (the longest prefix fits easily).
ID_LENGTH = 32


class IdPrefix(enum.StrEnum):
    """What an id names; the value is the text before the underscore."""

    CLIENT = "cli"
    CREDENTIAL = "cred"
    POST = "post"
    ATTEMPT = "att"
    SCHEDULE = "sched"
    WEBHOOK = "wh"
    EVENT = "evt"
    MEDIA = "med"
    STEP = "stp"
    FOLLOWUP = "fup"
    INSIGHTS = "ins"


_ID_RE = re.compile(rf"^([a-z]+)_([0-9A-Za-z]{{{RANDOM_LENGTH}}})$")


def new_id(prefix: IdPrefix) -> str:
    """Return a fresh id such as ``post_0vB4kq9TzLr2mWc8xYpA``."""
    return new_ids(prefix, 1)[0]


#: Random bytes below this map onto the alphabet without bias (248 = 4 * 62).
_UNBIASED = len(ALPHABET) * (256 // len(ALPHABET))


def new_ids(prefix: IdPrefix, count: int) -> list[str]:
    """``count`` fresh ids: one ``secrets.token_bytes`` call per id, the bytes at or
    above :data:`_UNBIASED` drawn again (docs/benchmarks.md has why not ``secrets.choice``)."""
    ids = []
    for _ in range(count):
        chars: list[str] = []
        while len(chars) < RANDOM_LENGTH:
            chars.extend(
                ALPHABET[b % len(ALPHABET)] for b in secrets.token_bytes(24) if b < _UNBIASED
            )
        ids.append(f"{prefix.value}_{''.join(chars[:RANDOM_LENGTH])}")
    return ids


def is_id(value: str, prefix: IdPrefix) -> bool:
    """Whether ``value`` has the shape of an id with ``prefix`` (it may still not exist)."""
    match = _ID_RE.match(value)
    return match is not None and match.group(1) == prefix.value


def id_factory(prefix: IdPrefix) -> _IdFactory:
    """A zero-argument callable for ``mapped_column(default=...)``."""
    return _IdFactory(prefix)


class _IdFactory:
    # A class rather than a lambda so that the default has a readable repr in
    # SQLAlchemy's error messages and so mypy sees its exact return type.
    __slots__ = ("prefix",)

    def __init__(self, prefix: IdPrefix) -> None:
        self.prefix = prefix

    def __call__(self) -> str:
        return new_id(self.prefix)

    def __repr__(self) -> str:
        return f"id_factory({self.prefix.name})"
