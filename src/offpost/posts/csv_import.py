"""CSV import: the lines of a file become checked posts (the logic of ``offpost import``).

The file format is documented in ``docs/import.md``. Pure where it can be: the
reading (:func:`read_rows`) takes a text stream, the checking (:func:`check_row`)
takes the client's credentials already loaded and ``now``, and
:func:`import_rows` drives both with the writing and the reporting passed in.

A line is checked with exactly the rules of ``POST /v1/posts``: the fields go
through :class:`~offpost.posts.input.PostCreate` (lengths, URLs,
blank messages), then :mod:`offpost.posts.rules` (content, how far in
the past, whether the credential may carry a post on that Page). What the API
has no counterpart for is decided here:

- ``publish_at`` is RFC 3339 with an offset, or a local time without one
  (``2026-12-01 09:00``) read in the line's ``timezone``: a local time that
  does not exist (the spring-forward gap) is an error for that line; a repeated
  one (the autumn fold) is its first occurrence. An empty cell means as soon as
  possible.
- The credential of a line is the client's credential whose Pages include the
  line's ``target``; none, or several without ``--credential``, is an error
  for that line.
- Line numbers are those of the file (the header is line 1), so a message in a
  quoted cell spanning lines makes the next line's number jump accordingly.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from offpost.errors import OffpostError
from offpost.models import Credential, CredentialStatus, PostStatus
from offpost.posts.input import PostCreate
from offpost.posts.media import media_spec, spec_problems
from offpost.posts.rules import (
    FieldProblem,
    content_problem,
    initial_status,
    parse_rfc3339,
    publish_at_problem,
)
from offpost.posts.store import NewPost
from offpost.recurrence import RuleError, load_zone, wall_time

#: The columns a file may have, in the documented order. Only ``target`` is required.
COLUMNS = (
    "target",
    "message",
    "link",
    "photo_url",
    "photos",
    "video",
    "reel",
    "first_comment",
    "publish_at",
    "timezone",
)
REQUIRED_COLUMNS = ("target",)

_LOCAL_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
)
_OFFSET = re.compile(r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_DOCS = "see docs/import.md"


class CsvImportError(OffpostError):
    """The file as a whole cannot be imported (header, encoding, broken quoting)."""


@dataclass(frozen=True, slots=True)
class LineProblem:
    """One thing wrong with one line of the file; ``field`` ``None`` means the whole line."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        if self.field is None:
            return f"line {self.line}: {self.message}"
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Row:
    """A non-empty data line: its number in the file and its cells by column (``""`` if absent)."""

    line: int
    cells: dict[str, str]


# --- reading -------------------------------------------------------------------------------


def check_header(cells: Sequence[str]) -> tuple[str, ...]:
    """The column names of a header line; :class:`CsvImportError` if it is not a valid header."""
    names = tuple(cell.strip().lower() for cell in cells)
    expected = ", ".join(COLUMNS)
    unknown = [cells[i].strip() for i, name in enumerate(names) if name not in COLUMNS]
    if unknown:
        shown = ", ".join(repr(name) for name in unknown)
        raise CsvImportError(
            f"line 1: unknown column {shown}: the header names some of {expected} ({_DOCS})"
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CsvImportError(f"line 1: column {duplicates[0]!r} appears twice in the header")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CsvImportError(
            f"line 1: the header has no {missing[0]!r} column; the first line must name "
            f"the columns, some of {expected} ({_DOCS})"
        )
    return names


def read_rows(text: TextIO) -> Iterator[Row | LineProblem]:
    """The data lines of the CSV in ``text`` (opened with ``newline=""``), one at a time.

    Skips empty lines (and lines whose cells are all blank); a line with more
    cells than the header is a :class:`LineProblem`, one with fewer has the
    missing cells empty. Raises :class:`CsvImportError` for a missing or bad
    header, broken quoting, or text that is not UTF-8 (when ``text`` decodes).
    """
    reader = csv.reader(text, strict=True)
    line = 1
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            line = reader.line_num + 1  # blank lines before the header
            header = next(reader, None)
        if header is None:
            raise CsvImportError(
                f"the file is empty: its first line must name the columns, "
                f"some of {', '.join(COLUMNS)} ({_DOCS})"
            )
        if line != 1:
            raise CsvImportError(f"line 1 is empty: the first line must be the header ({_DOCS})")
        columns = check_header(header)
        line = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                if len(cells) > len(columns):
                    yield LineProblem(
                        line, None, f"has {len(cells)} cells but the header names {len(columns)}"
                    )
                else:
                    padded = [*cells, *([""] * (len(columns) - len(cells)))]
                    yield Row(line, dict(zip(columns, padded, strict=True)))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise CsvImportError(
            f"line {line}: the file is not valid CSV ({exc}); check the quotes of that line"
        ) from None
    except UnicodeDecodeError:
        raise CsvImportError(
            f"the file is not UTF-8 text (an undecodable byte near line {line}): "
            "save it as UTF-8 (in spreadsheets: 'CSV UTF-8') and import it again"
        ) from None


# --- times ---------------------------------------------------------------------------------


class NoZoneError(ValueError):
    """A local ``publish_at`` on a line without a (valid) time zone."""


def local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of the naive wall time ``wall`` in ``zone``.

    A repeated wall time (autumn fold) is its first occurrence; one that does
    not exist (spring-forward gap) raises ``ValueError``.
    """
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall_time(instant, zone) != wall:
        raise ValueError(
            f"{wall.isoformat(sep=' ')} does not exist in {zone.key} (the clocks skip it): "
            "choose another time or give an offset"
        )
    return instant


def parse_publish_at(text: str, zone: ZoneInfo | None) -> datetime | None:
    """The UTC instant of a ``publish_at`` cell; ``None`` for an empty one (as soon as possible).

    An RFC 3339 time with an offset stands alone; a local time needs ``zone``.
    Raises ``ValueError`` with the reason.
    """
    text = text.strip()
    if not text:
        return None
    if _LOCAL_TIME.fullmatch(text):
        try:
            wall = datetime.fromisoformat(text.replace("t", "T"))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid time") from None
        if zone is None:
            raise NoZoneError(
                "is a local time but the line has no timezone: fill in the timezone "
                "column (e.g. Europe/Berlin) or give an offset (2026-12-01T09:00:00+01:00)"
            )
        return local_instant(wall, zone)
    if _OFFSET.search(text):
        return parse_rfc3339(text)  # its own reason: the API's words
    raise ValueError(
        "must be an RFC 3339 time with an offset (2026-12-01T09:00:00+01:00) "
        "or a local time (2026-12-01 09:00) with a timezone"
    )


# --- credentials ---------------------------------------------------------------------------


class CredentialIndex:
    """Which of the client's credentials carries the posts for a Page (in memory, no I/O)."""

    def __init__(self, credentials: Iterable[Credential], chosen: str | None = None) -> None:
        """``credentials``: all of the client's, with their Pages; ``chosen``: ``--credential``.

        Raises :class:`CsvImportError` when ``chosen`` is not one of them.
        """
        self._by_page: dict[str, list[Credential]] = {}
        self._chosen: Credential | None = None
        for credential in credentials:
            if credential.id == chosen:
                self._chosen = credential
            for page in credential.pages:
                self._by_page.setdefault(page.page_id, []).append(credential)
        if chosen is not None and self._chosen is None:
            raise CsvImportError(
                f"the client has no credential {chosen!r}: see GET /v1/credentials"
            )

    def choose(self, target: str) -> Credential | FieldProblem:
        """The credential for posts on ``target``, or the problem that leaves none."""
        if self._chosen is not None:
            return self._chosen
        found = self._by_page.get(target, [])
        usable = [c for c in found if c.status is not CredentialStatus.DELETED]
        if len(usable) == 1 or (not usable and found):
            # A deleted one alone is "chosen" so that the API's own message says why not.
            return (usable or found)[0]
        if not found:
            return FieldProblem(
                "target",
                "is not a Page of any credential of this client: "
                "submit its user's token first (POST /v1/credentials)",
            )
        ids = ", ".join(c.id for c in usable)
        return FieldProblem(
            "target",
            f"is a Page of {len(usable)} credentials ({ids}): choose one with --credential",
        )


# --- checking ------------------------------------------------------------------------------


def _none_if_empty(value: str, *, strip: bool = True) -> str | None:
    """An empty cell is an omitted field; a message of spaces stays, to be refused as blank."""
    if strip:
        value = value.strip()
    return value or None


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "line"
        out.append((field, str(error["msg"]).removeprefix("Value error, ")))
    return out


def check_row(
    row: Row, credentials: CredentialIndex, now: datetime, *, default_zone: ZoneInfo | None = None
) -> NewPost | list[LineProblem]:
    """The post ``row`` asks for, or every problem with it (as ``POST /v1/posts`` would judge)."""
    problems: list[LineProblem] = []
    cells = row.cells

    def problem(field: str | None, message: str) -> None:
        problems.append(LineProblem(row.line, field, message))

    zone = default_zone
    if zone_name := cells.get("timezone", "").strip():
        try:
            zone = load_zone(zone_name)
        except RuleError as exc:
            problem("timezone", exc.message)
            zone = None
    publish_at: datetime | None = None
    try:
        publish_at = parse_publish_at(cells.get("publish_at", ""), zone)
    except NoZoneError as exc:
        if not zone_name:  # else the bad zone is reported above, once
            problem("publish_at", str(exc))
    except ValueError as exc:
        problem("publish_at", str(exc))

    target = cells.get("target", "").strip()
    if not target:
        problem("target", "is required: the id of the Page to post on")
    fields: PostCreate | None = None
    try:
        fields = PostCreate(
            target=target or "-",
            message=_none_if_empty(cells.get("message", ""), strip=False),
            link=_none_if_empty(cells.get("link", "")),
            photo_url=_none_if_empty(cells.get("photo_url", "")),
            photos=_urls(cells.get("photos", ""), many=True),
            video=_urls(cells.get("video", "")),
            reel=_urls(cells.get("reel", "")),
            first_comment=_none_if_empty(cells.get("first_comment", ""), strip=False),
            publish_at=publish_at,
        )
    except ValidationError as exc:
        for field, message in _pydantic_problems(exc):
            problem(field, message)
    if fields is not None:
        spec = media_spec(fields.photos, fields.video, fields.reel)
        if why := content_problem(fields.message, fields.link, fields.photo_url, spec):
            problem("message", why)
        for issue in spec_problems(
            message=fields.message,
            link=fields.link,
            photo_url=fields.photo_url,
            photos=fields.photos,
            video=fields.video,
            reel=fields.reel,
        ):
            problem(issue.field, issue.message)
        if why := publish_at_problem(fields.publish_at, now):
            problem("publish_at", why)

    # The credential is looked for even when other cells are bad, so that one run
    # reports every problem of the line; not for a target that is itself bad.
    chosen: Credential | None = None
    status: PostStatus | FieldProblem | None = None
    if target and not any(p.field == "target" for p in problems):
        found = credentials.choose(target)
        if isinstance(found, FieldProblem):
            status = found
        else:
            chosen, status = found, initial_status(found, target)
    if isinstance(status, FieldProblem):
        problem(status.field, status.message)

    if problems or fields is None or chosen is None:
        return problems
    assert isinstance(status, PostStatus)
    return NewPost(
        credential_id=chosen.id,
        target=fields.target,
        message=fields.message,
        link=fields.link,
        photo_url=fields.photo_url,
        publish_at=fields.publish_at or now,
        status=status,
        media=media_spec(fields.photos, fields.video, fields.reel),
        first_comment=fields.first_comment,
    )


def _urls(cell: str, *, many: bool = False) -> Any:
    """The media of a cell, as the API's JSON: URLs separated by spaces (``photos``) or
    one URL. Uploads are the API's (``media_id``); a file names media by URL only."""
    urls = cell.split()
    if not urls:
        return None
    if not many:
        return {"url": " ".join(urls)}
    return [{"url": url} for url in urls]


# --- driving -------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportCounts:
    """What :func:`import_rows` did: lines read, posts written, bad lines."""

    lines: int = 0
    inserted: int = 0
    bad: int = 0


def import_rows(
    rows: Iterable[Row | LineProblem],
    check: Callable[[Row], NewPost | list[LineProblem]],
    insert: Callable[[list[NewPost]], None],
    report: Callable[[LineProblem], None],
    *,
    skip_bad: bool,
    batch_size: int,
    progress: Callable[[ImportCounts], None] | None = None,
) -> ImportCounts:
    """Check every row, report every problem, insert the good posts ``batch_size`` at a time.

    Without ``skip_bad`` nothing more is inserted once a bad line is seen (the
    caller rolls back what was); every line is still checked, so that every
    problem is reported in one run.
    """
    counts = ImportCounts()
    pending: list[NewPost] = []

    def flush() -> None:
        if pending and (skip_bad or not counts.bad):
            insert(list(pending))
            counts.inserted += len(pending)
        pending.clear()

    for row in rows:
        counts.lines += 1
        outcome = row if isinstance(row, LineProblem) else check(row)
        if isinstance(outcome, NewPost):
            pending.append(outcome)
            if len(pending) >= batch_size:
                flush()
        else:
            counts.bad += 1
            for problem in [outcome] if isinstance(outcome, LineProblem) else outcome:
                report(problem)
            if not skip_bad:
                pending.clear()
        if progress is not None:
            progress(counts)
    flush()
    return counts
