"""``/v1/media`` over HTTP, on real PostgreSQL, with both media stores: a local folder,
and S3 on a real SeaweedFS server (:mod:`tests.integration.media_support`).

Uploads in one request and resumable in chunks, the limits (413 while the body
streams, 422 for what the bytes are), ownership, deletion of media in use, the
retention sweep and the checksum check of stored bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from offpost.graph.sandbox import RunningSandbox
from offpost.media import limits
from offpost.media.retention import sweep_media
from offpost.media.store import (
    LocalMediaStore,
    MediaCorruptError,
    MediaStore,
    S3MediaStore,
    make_media_store,
    read_chunk,
    read_verified,
    verify,
)
from offpost.media.uses import MediaNotUsableError, media_for_post, media_in_use, record_uses
from offpost.models import Media, MediaStatus, PostStatus, make_engine, make_sessionmaker
from offpost.scheduler.housekeeping import Housekeeping
from offpost.settings import Settings
from tests.integration.api_support import add_client, bearer, make_settings
from tests.integration.posts_support import (
    Account,
    add_posts,
    assert_problem,
    db_session,
    make_account,
    set_fields,
)
from tests.integration.sandbox_support import SandboxClient
from tests.unit.test_media_inspect import jpeg, mp4, png

MEDIA_KEYS = {
    "id",
    "kind",
    "status",
    "content_type",
    "filename",
    "size_bytes",
    "received_bytes",
    "sha256",
    "width",
    "height",
    "duration_ms",
    "fps",
    "created_at",
}


@pytest.fixture(params=["local", "s3"])
def settings(
    request: pytest.FixtureRequest,
    postgres_url: str,
    sandbox_server: RunningSandbox,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[Settings]:
    """An API on a fresh database, with a fresh media folder or a fresh S3 bucket
    (removed afterwards: SeaweedFS gives each bucket volumes of its own)."""
    if request.param == "local":
        extra: dict[str, Any] = {"media_store": "local", "media_dir": str(tmp_path / "media")}
    else:
        s3 = request.getfixturevalue("s3_server")
        extra = {
            "media_store": "s3",
            "s3_endpoint_url": s3.url,
            "s3_bucket": f"offpost-test-{secrets.token_hex(6)}",
            "s3_access_key_id": s3.access_key_id,
            "s3_secret_access_key": s3.secret_access_key,
        }
    settings = make_settings(postgres_url, sandbox_server, redis_url, **extra)
    yield settings
    if request.param == "s3":
        store = make_media_store(settings)
        assert isinstance(store, S3MediaStore)
        with contextlib.suppress(Exception):
            for key in stored_keys(store):
                store.client.delete_object(Bucket=store.bucket, Key=key)
            store.client.delete_bucket(Bucket=store.bucket)


@pytest.fixture
def store(settings: Settings) -> MediaStore:
    return make_media_store(settings)


@pytest.fixture
def alice(settings: Settings) -> dict[str, str]:
    return bearer(add_client(settings, "alice"))


@pytest.fixture
def bob(settings: Settings) -> dict[str, str]:
    return bearer(add_client(settings, "bob"))


def stored_keys(store: MediaStore) -> list[str]:
    """Every key (or S3 object) the store holds."""
    if isinstance(store, LocalMediaStore):
        folder = store.directory
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert isinstance(store, S3MediaStore)
    try:
        answer = store.client.list_objects_v2(Bucket=store.bucket)
    except Exception:  # noqa: BLE001 - no bucket yet: nothing stored
        return []
    return sorted(item["Key"] for item in answer.get("Contents", []))


def media_rows(settings: Settings) -> int:
    with db_session(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Media)) or 0)


def load_media(settings: Settings, media_id: str) -> Media:
    with db_session(settings) as session:
        return session.scalars(select(Media).where(Media.id == media_id)).one()


def upload(
    api: TestClient, headers: dict[str, str], data: bytes, name: str = "f.bin", **form: str
) -> Any:
    return api.post(
        "/v1/media",
        files={"file": (name, data, "application/octet-stream")},
        data=form,
        headers=headers,
    )


def put_chunk(
    api: TestClient, headers: dict[str, str], media_id: str, data: bytes, start: int, total: int
) -> Any:
    content_range = f"bytes {start}-{start + len(data) - 1}/{total}"
    return api.put(
        f"/v1/media/{media_id}/content",
        content=data,
        headers={**headers, "Content-Range": content_range},
    )


def big_png(size: int) -> bytes:
    """A PNG header followed by filler up to ``size`` bytes (the header is all inspect reads)."""
    head = png(800, 600)
    return head + bytes(size - len(head))


# --- one request ---------------------------------------------------------------------------------


def test_an_image_is_stored_and_described(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    data = jpeg(1200, 630)
    response = upload(api, alice, data, "launch.txt", filename="Launch picture.jpg")
    assert response.status_code == 201, response.text
    media = response.json()
    assert set(media) == MEDIA_KEYS
    assert media["id"].startswith("med_")
    assert media["kind"] == "image"
    assert media["status"] == "ready"
    # The type comes from the bytes, not from the name or the part's content type.
    assert media["content_type"] == "image/jpeg"
    assert media["filename"] == "Launch picture.jpg"
    assert media["size_bytes"] == media["received_bytes"] == len(data)
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert (media["width"], media["height"], media["duration_ms"]) == (1200, 630, None)
    assert media["created_at"].endswith("Z")
    row = load_media(settings, media["id"])
    assert store.read(row.storage_key) == data
    assert api.get(f"/v1/media/{media['id']}", headers=alice).json() == media
    listed = api.get("/v1/media", headers=alice).json()
    assert [m["id"] for m in listed["media"]] == [media["id"]]
    # Without a filename field, the file part's own name is kept (for people only).
    assert upload(api, alice, png(10, 10), "dot.png").json()["filename"] == "dot.png"


def test_a_video_is_stored_with_its_duration_and_size(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    data = mp4(duration_ms=42_000, width=1920, height=1080, fps=25, moov_first=False)
    response = upload(api, alice, data, "clip.mov")
    assert response.status_code == 201, response.text
    media = response.json()
    assert (media["kind"], media["content_type"]) == ("video", "video/mp4")
    assert (media["width"], media["height"], media["duration_ms"]) == (1920, 1080, 42_000)
    row = load_media(settings, media["id"])
    verify(store, row)
    assert read_verified(store, row) == data
    assert read_chunk(store, row, 10, 30) == data[10:30]


def test_an_image_over_its_limit_is_refused_while_it_streams_and_nothing_is_kept(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    response = upload(api, alice, big_png(limits.MAX_IMAGE_BYTES + 1))
    problem = assert_problem(response, 413, "payload_too_large")
    assert str(limits.MAX_IMAGE_BYTES) in problem["detail"]
    assert media_rows(settings) == 0
    assert stored_keys(store) == []
    # At the limit exactly, it is taken.
    assert upload(api, alice, big_png(limits.MAX_IMAGE_BYTES)).status_code == 201


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"just some text, not a picture" * 10, "JPEG, PNG, GIF, BMP or TIFF"),
        (mp4(duration_ms=limits.MAX_VIDEO_DURATION_MS + 1000, width=1280, height=720), "4 hours"),
        (mp4(width=4000, height=1000), "9:16 and 16:9"),
        (mp4()[:-500], "truncated"),
        (b"", "empty"),
    ],
    ids=["text", "too-long-video", "too-wide-video", "truncated-video", "empty"],
)
def test_a_file_offpost_does_not_take_is_refused_naming_why(
    api: TestClient,
    alice: dict[str, str],
    store: MediaStore,
    settings: Settings,
    data: bytes,
    words: str,
) -> None:
    problem = assert_problem(upload(api, alice, data, "x.mp4"), 422, "invalid_request", "file")
    assert words in problem["detail"]
    assert media_rows(settings) == 0
    assert stored_keys(store) == []


def test_a_form_without_a_file_is_refused(api: TestClient, alice: dict[str, str]) -> None:
    response = api.post("/v1/media", data={"filename": "x"}, files={}, headers=alice)
    assert_problem(response, 422, "invalid_request")
    response = api.post("/v1/media", json={"file": "x"}, headers=alice)
    assert_problem(response, 422, "invalid_request", "body")


# --- resumable -----------------------------------------------------------------------------------


def test_a_resumable_upload_in_three_chunks(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    data = mp4(duration_ms=30_000, width=1080, height=1920, mdat_bytes=300_000)
    total = len(data)
    started = api.post(
        "/v1/media/uploads", json={"filename": "reel.mp4", "size_bytes": total}, headers=alice
    )
    assert started.status_code == 201, started.text
    media = started.json()
    assert set(media) == MEDIA_KEYS | {"upload_url"}
    assert media["status"] == "uploading"
    assert (media["size_bytes"], media["received_bytes"]) == (total, 0)
    url = media["upload_url"]
    assert url == f"/v1/media/{media['id']}/content"
    media_id = media["id"]
    one, two = total // 3, 2 * total // 3

    first = put_chunk(api, alice, media_id, data[:one], 0, total)
    assert first.status_code == 200, first.text
    assert first.json()["received_bytes"] == one
    assert first.json()["content_type"] == "video/mp4"
    # The same chunk again (its answer was lost): 200, nothing written twice.
    again = put_chunk(api, alice, media_id, data[:one], 0, total)
    assert again.status_code == 200, again.text
    assert again.json()["received_bytes"] == one
    assert store.size(media_id) == one
    # A chunk past a gap: 409, saying where to resume.
    problem = assert_problem(
        put_chunk(api, alice, media_id, data[two:], two, total), 409, "conflict"
    )
    assert f"starts at byte {one}" in problem["detail"]
    assert api.get(f"/v1/media/{media_id}", headers=alice).json()["received_bytes"] == one

    second = put_chunk(api, alice, media_id, data[one:two], one, total)
    assert second.json()["received_bytes"] == two
    assert second.json()["status"] == "uploading"
    last = put_chunk(api, alice, media_id, data[two:], two, total)
    assert last.status_code == 200, last.text
    done = last.json()
    assert done["status"] == "ready"
    assert done["sha256"] == hashlib.sha256(data).hexdigest()
    assert (done["width"], done["height"], done["duration_ms"]) == (1080, 1920, 30_000)
    assert store.read(media_id) == data
    verify(store, load_media(settings, media_id))
    # A last chunk sent again after it completed: 200 with the ready media.
    assert put_chunk(api, alice, media_id, data[two:], two, total).json()["status"] == "ready"


def test_a_resumable_upload_refuses_what_breaks_a_limit(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    too_big = api.post(
        "/v1/media/uploads", json={"size_bytes": limits.MAX_VIDEO_BYTES + 1}, headers=alice
    )
    assert (
        str(limits.MAX_VIDEO_BYTES) in assert_problem(too_big, 413, "payload_too_large")["detail"]
    )
    assert media_rows(settings) == 0

    # An image announced over the image limit: refused at its first bytes, and deleted.
    size = limits.MAX_IMAGE_BYTES + 10
    media_id = api.post("/v1/media/uploads", json={"size_bytes": size}, headers=alice).json()["id"]
    chunk = big_png(1000)
    assert_problem(put_chunk(api, alice, media_id, chunk, 0, size), 413, "payload_too_large")
    assert api.get(f"/v1/media/{media_id}", headers=alice).json()["status"] == "deleted"
    assert stored_keys(store) == []

    # A video too long, found when the last chunk completes it: 422, deleted.
    data = mp4(duration_ms=limits.MAX_VIDEO_DURATION_MS + 1000, width=1280, height=720)
    media_id = api.post("/v1/media/uploads", json={"size_bytes": len(data)}, headers=alice).json()[
        "id"
    ]
    assert put_chunk(api, alice, media_id, data[:100], 0, len(data)).status_code == 200
    refused = put_chunk(api, alice, media_id, data[100:], 100, len(data))
    assert "4 hours" in assert_problem(refused, 422, "invalid_request", "file")["detail"]
    assert load_media(settings, media_id).status == MediaStatus.DELETED
    assert stored_keys(store) == []

    # A bad Content-Range.
    media_id = api.post("/v1/media/uploads", json={"size_bytes": 10}, headers=alice).json()["id"]
    wrong_total = api.put(
        f"/v1/media/{media_id}/content",
        content=b"0123456789",
        headers={**alice, "Content-Range": "bytes 0-9/11"},
    )
    assert_problem(wrong_total, 422, "invalid_request", "Content-Range")


# --- ownership and deletion ----------------------------------------------------------------------


def test_another_clients_media_is_not_found(
    api: TestClient, alice: dict[str, str], bob: dict[str, str], store: MediaStore
) -> None:
    media = upload(api, alice, png(4, 4)).json()
    upload_id = api.post("/v1/media/uploads", json={"size_bytes": 10}, headers=alice).json()["id"]
    for media_id in (media["id"], upload_id):
        assert_problem(api.get(f"/v1/media/{media_id}", headers=bob), 404, "not_found")
        assert_problem(api.delete(f"/v1/media/{media_id}", headers=bob), 404, "not_found")
        assert_problem(put_chunk(api, bob, media_id, b"0123456789", 0, 10), 404, "not_found")
    assert api.get("/v1/media", headers=bob).json() == {"media": [], "next_cursor": None}
    assert api.get(f"/v1/media/{media['id']}", headers=alice).json()["status"] == "ready"
    assert_problem(api.get("/v1/media/post_nope", headers=alice), 404, "not_found")


def test_the_list_pages_newest_first(api: TestClient, alice: dict[str, str]) -> None:
    ids = [upload(api, alice, png(i + 1, 1)).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/media", params=params, headers=alice).json()
        seen += [m["id"] for m in page["media"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert_problem(
        api.get("/v1/media", params={"cursor": "nonsense"}, headers=alice),
        422,
        "invalid_request",
        "cursor",
    )


@pytest.fixture
def account(api: TestClient, settings: Settings, graph: SandboxClient) -> Account:
    return make_account(api, settings, graph, "carol")


def use_in_post(settings: Settings, account: Account, media_id: str) -> str:
    """A pending post that publishes the media (rows written as the posts code would)."""
    [post_id] = add_posts(settings, account, 1)
    with db_session(settings) as session:
        found = media_for_post(session, account.client_id, [media_id])
        assert list(found) == [media_id]
        record_uses(session, [media_id], post_id=post_id)
        session.commit()
    return post_id


def test_media_in_use_cannot_be_deleted(
    api: TestClient, account: Account, store: MediaStore, settings: Settings
) -> None:
    media_id = upload(api, account.headers, png(5, 5)).json()["id"]
    post_id = use_in_post(settings, account, media_id)
    problem = assert_problem(
        api.delete(f"/v1/media/{media_id}", headers=account.headers), 409, "conflict"
    )
    assert "pending post" in problem["detail"]
    assert store.size(media_id) > 0

    set_fields(settings, post_id, status=PostStatus.CANCELED)
    assert api.delete(f"/v1/media/{media_id}", headers=account.headers).status_code == 204
    assert api.delete(f"/v1/media/{media_id}", headers=account.headers).status_code == 204
    gone = api.get(f"/v1/media/{media_id}", headers=account.headers).json()
    assert gone["status"] == "deleted"
    assert stored_keys(store) == []
    assert api.get("/v1/media", headers=account.headers).json()["media"] == []
    assert len(api.get("/v1/media?status=deleted", headers=account.headers).json()["media"]) == 1
    with db_session(settings) as session, pytest.raises(MediaNotUsableError, match="deleted"):
        media_for_post(session, account.client_id, [media_id])


def test_media_for_post_says_the_same_for_unknown_and_foreign_ids(
    api: TestClient, account: Account, alice: dict[str, str], settings: Settings
) -> None:
    foreign = upload(api, alice, png(5, 5)).json()["id"]
    uploading = api.post(
        "/v1/media/uploads", json={"size_bytes": 10}, headers=account.headers
    ).json()["id"]
    with db_session(settings) as session:
        with pytest.raises(MediaNotUsableError) as unknown:
            media_for_post(session, account.client_id, ["med_00000000000000000000"])
        with pytest.raises(MediaNotUsableError) as other:
            media_for_post(session, account.client_id, [foreign])
        assert unknown.value.reason == other.value.reason == "no such media"
        with pytest.raises(MediaNotUsableError, match="not complete"):
            media_for_post(session, account.client_id, [uploading])


# --- retention and checksums ---------------------------------------------------------------------


def test_retention_deletes_old_unused_uploads_and_keeps_used_ones(
    api: TestClient, account: Account, store: MediaStore, settings: Settings
) -> None:
    headers = account.headers
    unused = upload(api, headers, png(3, 3)).json()["id"]
    used = upload(api, headers, png(4, 4)).json()["id"]
    fresh = upload(api, headers, png(6, 6)).json()["id"]
    abandoned = api.post("/v1/media/uploads", json={"size_bytes": 100}, headers=headers).json()
    assert put_chunk(api, headers, abandoned["id"], png(7, 7), 0, 100).status_code == 200
    use_in_post(settings, account, used)
    old = datetime.now(UTC) - timedelta(hours=settings.media_retention_h + 1)
    with db_session(settings) as session:
        session.execute(
            update(Media)
            .where(Media.id.in_([unused, used, abandoned["id"]]))
            .values(created_at=old)
        )
        session.commit()

    engine = make_engine(settings.database_url)
    try:
        sessions = make_sessionmaker(engine)
        housekeeping = Housekeeping(
            sessions,
            media_store=store,
            media_retention=timedelta(hours=settings.media_retention_h),
        )
        result = housekeeping.maybe_sweep_media(datetime.now(UTC))
        assert result is not None
        assert (result.abandoned, result.unused, result.failed) == (1, 1, 0)
        # Asked again within a few minutes: nothing more to do, nothing run.
        assert housekeeping.maybe_sweep_media(datetime.now(UTC)) is None
        assert sweep_media(sessions, store, datetime.now(UTC), timedelta(hours=24)).unused == 0
        with sessions() as session:
            assert media_in_use(session, used)
            assert not media_in_use(session, unused)
    finally:
        engine.dispose()

    statuses = {m: load_media(settings, m).status for m in (unused, used, fresh, abandoned["id"])}
    assert statuses == {
        unused: MediaStatus.DELETED,
        used: MediaStatus.READY,
        fresh: MediaStatus.READY,
        abandoned["id"]: MediaStatus.DELETED,
    }
    assert load_media(settings, unused).deleted_at is not None
    assert store.size(unused) == store.size(abandoned["id"]) == 0
    assert store.size(used) > 0
    assert store.size(fresh) > 0


def test_verify_catches_bytes_changed_in_the_store(
    api: TestClient, alice: dict[str, str], store: MediaStore, settings: Settings
) -> None:
    data = mp4(duration_ms=5_000)
    media_id = upload(api, alice, data).json()["id"]
    row = load_media(settings, media_id)
    verify(store, row)
    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    store.delete(row.storage_key)
    store.write(row.storage_key, 0, bytes(corrupted))
    with pytest.raises(MediaCorruptError, match="SHA-256"):
        verify(store, row)
    with pytest.raises(MediaCorruptError):
        read_verified(store, row)
    store.delete(row.storage_key)
    store.write(row.storage_key, 0, data[:-1])
    with pytest.raises(MediaCorruptError):
        verify(store, row)
    with pytest.raises(MediaCorruptError):
        read_chunk(store, row, 0, len(data))


def test_a_store_write_must_continue_where_the_key_ends(store: MediaStore) -> None:
    store.write("med_test", 0, b"abc")
    store.write("med_test", 3, b"def")
    with pytest.raises(Exception, match="offset 2"):
        store.write("med_test", 2, b"x")
    assert store.read("med_test", 2, 5) == b"cde"
    assert store.read("med_test", 4) == b"ef"
    with pytest.raises(ValueError):
        store.write("../escape", 0, b"x")
    store.delete("med_test")
    store.delete("med_test")
    assert store.size("med_test") == 0


def test_no_secret_of_the_store_is_in_any_answer(
    api: TestClient, alice: dict[str, str], settings: Settings
) -> None:
    secrets_ = [
        s.get_secret_value()
        for s in (settings.s3_secret_access_key, settings.s3_access_key_id)
        if s is not None
    ]
    answers = [
        upload(api, alice, png(2, 2)).text,
        upload(api, alice, b"nope").text,
        api.get("/v1/media", headers=alice).text,
        api.get("/openapi.json").text,
    ]
    for secret in secrets_:
        assert all(secret not in answer for answer in answers)
