"""CSV formula injection (cells starting with ``=``, ``+``, ``-``, ``@``, tab, CR).

The rule (docs/import.md, docs/security.md): the import keeps such cells
verbatim — a post that begins with "-50% today" or "@everyone" is ordinary
text, and Facebook shows it as text — because offpost never writes imported
data back out as CSV: the API answers JSON, the dashboard HTML (escaped), the
CLI plain text. A CSV export added later must neutralise such cells on the way
out; the last test fails until whoever adds one has done that and said so here.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import offpost
from offpost.models import Credential, CredentialPage, CredentialStatus
from offpost.posts.csv_import import CredentialIndex, Row, check_row, read_rows
from offpost.posts.store import NewPost

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FORMULAS = [
    '=HYPERLINK("https://evil.example","click")',
    "+1 for croissants",
    "-50% on everything today",
    "@everyone: we are open",
    "\t=1+1",
    "\r=1+1",
]
#: Modules that write CSV, each with how it neutralises formula cells. None so far.
CSV_WRITERS: dict[str, str] = {}


@pytest.mark.parametrize("message", FORMULAS)
def test_a_message_that_looks_like_a_formula_is_imported_verbatim(message: str) -> None:
    data = f'target,message\n111,"{message.replace(chr(34), chr(34) * 2)}"\n'
    [row] = list(read_rows(io.StringIO(data, newline="")))
    assert isinstance(row, Row)
    index = CredentialIndex(
        [
            Credential(
                id="cred_" + "A" * 20,
                status=CredentialStatus.ACTIVE,
                pages=[CredentialPage(page_id="111", name="Page")],
            )
        ]
    )
    post = check_row(row, index, NOW)
    assert isinstance(post, NewPost), post
    assert post.message == message


def test_offpost_writes_no_csv_that_a_spreadsheet_could_open() -> None:
    root = Path(offpost.__file__).parent
    writes_csv = re.compile(r"csv\.(?:writer|DictWriter)\b|text/csv|\.csv[\"']\s*[,)]")
    found = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if writes_csv.search(path.read_text(encoding="utf-8"))
    )
    assert found == sorted(CSV_WRITERS), (
        "a module writes CSV: neutralise cells starting with = + - @ tab CR on the way out "
        "(prefix a ') as docs/security.md says, test it, and list the module in CSV_WRITERS"
    )
