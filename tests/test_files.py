"""Every files route of API.md, on SQLite and on PostgreSQL."""

import base64
import hashlib
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from email.utils import format_datetime
from email.utils import parsedate_to_datetime

import pytest
from checks import assert_problem

FILES = "/api/v1/files"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def unique(prefix: str = "t") -> str:
    """Return a name prefix no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}-"


def created(response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def listing(server, **params) -> dict:
    response = server.get(FILES, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# Upload forms


def test_raw_upload_record_and_headers(server):
    """A raw upload answers 201 with the record, Location and ETag."""
    data = os.urandom(5000)
    response = server.upload(data, name="raw.bin")
    record = created(response)

    assert set(record) == {
        "id",
        "name",
        "size",
        "content_type",
        "sha256",
        "metadata",
        "created_at",
        "updated_at",
        "links",
    }
    assert str(uuid.UUID(record["id"])) == record["id"]
    assert record["name"] == "raw.bin"
    assert record["size"] == 5000
    assert record["sha256"] == sha256_hex(data)
    assert record["metadata"] == {}
    assert RFC3339_Z.match(record["created_at"])
    assert RFC3339_Z.match(record["updated_at"])
    assert record["links"] == {
        "self": f"{FILES}/{record['id']}",
        "content": f"{FILES}/{record['id']}/content",
    }
    assert response.headers["Location"] == f"{FILES}/{record['id']}"
    assert response.headers["ETag"] == f'"{sha256_hex(data)}"'

    fetched = server.get(record["links"]["self"])
    assert fetched.status_code == 200
    assert fetched.json() == record


def test_raw_upload_content_type_default_and_given(server):
    """A raw body without Content-Type is application/octet-stream."""
    bare = created(server.upload(b"x", headers={"Content-Type": ""}))
    assert bare["content_type"] == "application/octet-stream"

    typed = created(
        server.upload(
            b"hello", headers={"Content-Type": "text/plain; charset=utf-8"}
        )
    )
    assert typed["content_type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    "disposition, expected",
    [
        ('attachment; filename="plain.txt"', "plain.txt"),
        ("attachment; filename=bare.txt", "bare.txt"),
        (
            'attachment; filename="fallback.txt"; '
            "filename*=UTF-8''%E2%82%AC%20rates.txt",
            "\u20ac rates.txt",
        ),
        (
            "attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D0%B5%D1%82.pdf; "
            'filename="fallback.pdf"',
            "\u043e\u0442\u0447\u0435\u0442.pdf",
        ),
    ],
)
def test_raw_upload_name_from_content_disposition(
    server, disposition, expected
):
    """The name comes from Content-Disposition; filename* wins."""
    response = server.post(
        FILES, data=b"named", headers={"Content-Disposition": disposition}
    )
    assert created(response)["name"] == expected


def test_raw_upload_query_name_is_nfc_and_unicode(server):
    """A non-Latin name in ?name= is kept as it is, NFC-normalised."""
    decomposed = "Cafe\u0301 \u65e5\u672c.txt"
    record = created(server.upload(b"cafe", name=decomposed))
    assert record["name"] == "Caf\u00e9 \u65e5\u672c.txt"


def test_name_is_a_label_not_a_path(server):
    """A name with path parts is kept as given and touches no such path."""
    name = "../../etc/passwd"
    record = created(server.upload(b"label", name=name))
    assert record["name"] == name
    assert server.get(record["links"]["self"]).json()["name"] == name
    assert not list(server.workdir.rglob("passwd"))
    assert server.get(record["links"]["content"]).content == b"label"


def test_chunked_upload(server):
    """A body sent with Transfer-Encoding: chunked is stored whole."""
    blocks = [os.urandom(300_000) for _ in range(5)]
    data = b"".join(blocks)

    def body():
        yield from blocks

    response = server.post(FILES, params={"name": "chunked.bin"}, data=body())
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    record = created(response)
    assert record["size"] == len(data)
    assert record["sha256"] == sha256_hex(data)
    assert server.get(record["links"]["content"]).content == data


def test_multipart_upload(server):
    """A multipart file part gives name, type; metadata comes from a field."""
    data = os.urandom(70_000)
    response = server.post(
        FILES,
        files={"file": ("report \u00e9t\u00e9.csv", data, "text/csv")},
        data={"metadata": json.dumps({"project": "apollo", "v": "2"})},
    )
    record = created(response)
    assert record["name"] == "report \u00e9t\u00e9.csv"
    assert record["content_type"] == "text/csv"
    assert record["metadata"] == {"project": "apollo", "v": "2"}
    assert record["sha256"] == sha256_hex(data)
    assert server.get(record["links"]["content"]).content == data


def test_multipart_metadata_after_file_and_part_default_type(server):
    """A metadata field after the file counts; a part without type is binary."""
    boundary = "orb-test-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="late.bin"\r\n'
        "\r\n"
        "payload\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="metadata"\r\n'
        "\r\n"
        '{"late": "yes"}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = server.post(
        FILES,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    record = created(response)
    assert record["name"] == "late.bin"
    assert record["content_type"] == "application/octet-stream"
    assert record["metadata"] == {"late": "yes"}
    assert record["size"] == len(b"payload")


def test_metadata_headers(server):
    """X-Orb-Meta-* headers add metadata, to raw and multipart uploads."""
    raw = created(
        server.upload(
            b"meta",
            headers={
                "X-Orb-Meta-Project": "apollo",
                "X-Orb-Meta-owner": "ann",
            },
        )
    )
    assert raw["metadata"] == {"project": "apollo", "owner": "ann"}

    utf8 = created(
        server.upload(
            b"utf8", headers={"X-Orb-Meta-city": "Z\u00fcrich".encode()}
        )
    )
    assert utf8["metadata"] == {"city": "Z\u00fcrich"}

    multi = created(
        server.post(
            FILES,
            files={"file": ("m.txt", b"multi", "text/plain")},
            data={"metadata": json.dumps({"a": "1"})},
            headers={"X-Orb-Meta-b": "2"},
        )
    )
    assert multi["metadata"] == {"a": "1", "b": "2"}


@pytest.mark.parametrize("header", ["X-Orb-SHA256", "Content-Digest"])
def test_digest_match_is_accepted(server, header):
    """A correct digest sent with the body lets the upload through."""
    data = os.urandom(1000)
    value = (
        sha256_hex(data).upper()
        if header == "X-Orb-SHA256"
        else f"sha-256=:{sha256_b64(data)}:"
    )
    record = created(server.upload(data, headers={header: value}))
    assert record["sha256"] == sha256_hex(data)


def test_content_digest_among_other_algorithms(server):
    """Content-Digest may list other algorithms beside sha-256."""
    data = os.urandom(1000)
    sha512 = base64.b64encode(hashlib.sha512(data).digest()).decode()
    value = f"sha-512=:{sha512}:, sha-256=:{sha256_b64(data)}:"
    created(server.upload(data, headers={"Content-Digest": value}))


@pytest.mark.parametrize("header", ["X-Orb-SHA256", "Content-Digest"])
def test_digest_mismatch_stores_nothing(server, header):
    """A wrong digest is 400 digest_mismatch and leaves nothing."""
    data = os.urandom(1000)
    other = b"something else"
    value = (
        sha256_hex(other)
        if header == "X-Orb-SHA256"
        else f"sha-256=:{sha256_b64(other)}:"
    )
    before = server.snapshot()
    response = server.upload(data, headers={header: value})
    assert_problem(response, 400, "digest_mismatch")
    assert server.snapshot() == before
    assert not listing(server, sha256=sha256_hex(data))["items"]


def test_multipart_digest_mismatch_stores_nothing(server):
    """Digest verification applies to the file part of a multipart body."""
    before = server.snapshot()
    response = server.post(
        FILES,
        files={"file": ("d.bin", b"abc", "application/octet-stream")},
        headers={"X-Orb-SHA256": sha256_hex(b"abd")},
    )
    assert_problem(response, 400, "digest_mismatch")
    assert server.snapshot() == before


# Dedupe


def test_same_bytes_stored_once(server):
    """Identical bytes share one blob; it goes with the last record."""
    data = os.urandom(4096)
    digest = sha256_hex(data)
    files_before, blobs_before = server.counts()

    first = created(server.upload(data, name="one.bin"))
    second = created(server.upload(data, name="two.bin"))
    assert first["id"] != second["id"]
    assert server.counts() == (files_before + 2, blobs_before + 1)
    assert server.blob_files().count(digest) == 1

    assert server.delete(first["links"]["self"]).status_code == 204
    assert server.counts() == (files_before + 1, blobs_before + 1)
    assert digest in server.blob_files()
    assert server.get(second["links"]["content"]).content == data

    assert server.delete(second["links"]["self"]).status_code == 204
    assert server.counts() == (files_before, blobs_before)
    assert digest not in server.blob_files()
    assert server.temp_files() == []


def test_concurrent_uploads_and_deletes_of_same_bytes(server):
    """Racing uploads and deletes of one blob keep records and blobs agreed."""
    data = os.urandom(300_000)
    digest = sha256_hex(data)
    files_before, blobs_before = server.counts()

    def upload(index):
        return created(server.upload(data, name=f"race-{index}"))

    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(upload, range(8)))
    assert server.counts() == (files_before + 8, blobs_before + 1)

    def delete_then_upload(record):
        assert server.delete(record["links"]["self"]).status_code == 204
        return upload(record["name"])

    with ThreadPoolExecutor(8) as pool:
        second = list(pool.map(delete_then_upload, first))
    assert server.counts() == (files_before + 8, blobs_before + 1)
    assert server.blob_files().count(digest) == 1
    for record in second:
        assert server.get(record["links"]["content"]).content == data

    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda r: server.delete(r["links"]["self"]).status_code, second
            )
        )
    assert statuses == [204] * 8
    assert server.counts() == (files_before, blobs_before)
    assert digest not in server.blob_files()
    assert server.temp_files() == []


# Listing


def upload_named(server, names: list[str], **kwargs) -> list[dict]:
    return [
        created(
            server.upload(name.encode() + os.urandom(8), name=name, **kwargs)
        )
        for name in names
    ]


def test_list_newest_first_with_limit(server):
    """Listing is newest first and honours limit."""
    prefix = unique("order")
    records = upload_named(server, [f"{prefix}{i}" for i in range(4)])

    page = listing(server, prefix=prefix)
    assert [item["id"] for item in page["items"]] == [
        record["id"] for record in reversed(records)
    ]
    assert page["next_cursor"] is None
    assert page["items"][0] == records[-1]

    limited = listing(server, prefix=prefix, limit=3)
    assert len(limited["items"]) == 3
    assert limited["next_cursor"]


def test_list_default_limit_is_100(server):
    """Without limit a page holds at most 100 items."""
    page = listing(server)
    assert len(page["items"]) <= 100


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_list_cursor_pagination(server, limit):
    """Pages follow each other with no duplicate and no gap."""
    prefix = unique("page")
    records = upload_named(server, [f"{prefix}{i}" for i in range(7)])
    expected = [record["id"] for record in reversed(records)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"prefix": prefix, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = listing(server, **params)
        pages += 1
        assert len(page["items"]) <= limit
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20

    assert seen == expected
    assert pages == -(-7 // limit)


def test_list_pagination_over_new_uploads_is_stable(server):
    """Uploads made between pages do not shift the pages already given."""
    prefix = unique("stable")
    records = upload_named(server, [f"{prefix}{i}" for i in range(4)])
    first = listing(server, prefix=prefix, limit=2)
    upload_named(server, [f"{prefix}new"])
    second = listing(
        server, prefix=prefix, limit=2, cursor=first["next_cursor"]
    )
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert ids == [record["id"] for record in reversed(records)]


def test_list_prefix_with_like_metacharacters(server):
    """% and _ in a prefix match themselves only."""
    base = unique("meta")
    names = [f"{base}%x", f"{base}_y", f"{base}ab", f"{base}%_z", f"{base}\\q"]
    upload_named(server, names)

    def names_for(prefix):
        return sorted(
            item["name"] for item in listing(server, prefix=prefix)["items"]
        )

    assert names_for(base) == sorted(names)
    assert names_for(f"{base}%") == sorted([f"{base}%x", f"{base}%_z"])
    assert names_for(f"{base}_") == [f"{base}_y"]
    assert names_for(f"{base}%_") == [f"{base}%_z"]
    assert names_for(f"{base}\\") == [f"{base}\\q"]
    assert names_for(base.upper()) == []


def test_list_by_sha256_and_content_type(server):
    """sha256 and content_type filters select exactly the matching files."""
    data = os.urandom(2048)
    same = [
        created(server.upload(data, name="a.bin")),
        created(server.upload(data, name="b.bin")),
    ]
    kind = f"application/x-orb-{uuid.uuid4().hex[:8]}"
    typed = created(server.upload(b"typed", headers={"Content-Type": kind}))

    by_sha = listing(server, sha256=sha256_hex(data).upper())
    assert sorted(item["id"] for item in by_sha["items"]) == sorted(
        record["id"] for record in same
    )
    by_type = listing(server, content_type=kind)
    assert [item["id"] for item in by_type["items"]] == [typed["id"]]

    both = listing(server, sha256=sha256_hex(data), content_type=kind)
    assert both["items"] == []


# PATCH


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/merge-patch+json"]
)
def test_patch_rename_and_merge_metadata(server, content_type):
    """PATCH renames and merges metadata; null deletes a key."""
    data = os.urandom(100)
    record = created(
        server.upload(
            data,
            name="before.txt",
            headers={"X-Orb-Meta-keep": "k", "X-Orb-Meta-drop": "d"},
        )
    )
    patch = {
        "name": "after \u00e9.txt",
        "metadata": {"drop": None, "new": "n"},
    }
    response = server.patch(
        record["links"]["self"],
        data=json.dumps(patch),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "after \u00e9.txt"
    assert updated["metadata"] == {"keep": "k", "new": "n"}
    assert updated["sha256"] == record["sha256"]
    assert updated["size"] == record["size"]
    assert updated["created_at"] == record["created_at"]
    assert updated["updated_at"] >= record["updated_at"]
    assert server.get(record["links"]["self"]).json() == updated
    assert server.get(record["links"]["content"]).content == data

    only_meta = server.patch(
        record["links"]["self"], json={"metadata": {"keep": None}}
    )
    assert only_meta.status_code == 200
    assert only_meta.json()["metadata"] == {"new": "n"}
    assert only_meta.json()["name"] == "after \u00e9.txt"


def test_patch_bad_bodies(server):
    """Wrong content type is 415; bad JSON and non-objects are 400."""
    record = created(server.upload(b"p", name="p.txt"))
    url = record["links"]["self"]

    assert_problem(
        server.patch(
            url, data='{"name": "x"}', headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        server.patch(
            url, data="{not json", headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    for body in ("[1, 2]", '"name"', "null", "3"):
        assert_problem(
            server.patch(
                url, data=body, headers={"Content-Type": "application/json"}
            ),
            400,
            "invalid_patch",
        )

    assert_problem(
        server.patch(url, json={"name": "a\x07b"}), 400, "invalid_name"
    )
    assert_problem(server.patch(url, json={"name": None}), 400, "invalid_name")
    assert_problem(server.patch(url, json={"size": 3}), 400, "invalid_patch")
    assert_problem(
        server.patch(url, json={"metadata": {"k": 1}}), 400, "invalid_metadata"
    )
    assert server.get(url).json() == record


def test_patch_unknown_and_malformed_id(server):
    """PATCH follows the same id rules as GET."""
    assert_problem(
        server.patch(f"{FILES}/{uuid.uuid4()}", json={"name": "x"}),
        404,
        "file_not_found",
    )
    assert_problem(
        server.patch(f"{FILES}/nope", json={"name": "x"}), 400, "invalid_id"
    )


# DELETE


def test_delete_twice(server):
    """DELETE answers 204, then 404; the record and content are gone."""
    record = created(server.upload(os.urandom(64)))
    first = server.delete(record["links"]["self"])
    assert first.status_code == 204
    assert first.content == b""
    assert_problem(
        server.delete(record["links"]["self"]), 404, "file_not_found"
    )
    assert_problem(server.get(record["links"]["self"]), 404, "file_not_found")
    assert_problem(
        server.get(record["links"]["content"]), 404, "file_not_found"
    )


# Content


_SAMPLES: dict[str, tuple] = {}


@pytest.fixture
def sample(server):
    """Return (server, record, bytes) of a 1000-byte file, one per server."""
    if server.url in _SAMPLES:
        return _SAMPLES[server.url]

    data = os.urandom(1000)
    record = created(
        server.upload(
            data,
            name="r\u00e9sum\u00e9 \u201cfinal\u201d;.txt",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    )
    _SAMPLES[server.url] = server, record, data
    return _SAMPLES[server.url]


def test_content_headers(sample):
    """GET content carries every header of API.md."""
    server, record, data = sample
    response = server.get(record["links"]["content"])
    headers = response.headers
    assert response.status_code == 200
    assert response.content == data
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == "1000"
    assert headers["ETag"] == f'"{sha256_hex(data)}"'
    assert headers["Repr-Digest"] == f"sha-256=:{sha256_b64(data)}:"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"

    modified = parsedate_to_datetime(headers["Last-Modified"])
    created_at = datetime.fromisoformat(
        record["created_at"].replace("Z", "+00:00")
    )
    assert modified == created_at.replace(microsecond=0)

    disposition = headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    match = re.search(r'filename="([^"]*)"', disposition)
    assert match and match.group(1).isascii()
    assert "\\" not in match.group(1) and ";" not in match.group(1)
    assert (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%E2%80%9Cfinal%E2%80%9D%3B.txt"
        in disposition
    )


def test_content_inline(sample):
    """?inline=1 asks for an inline disposition."""
    server, record, _ = sample
    response = server.get(record["links"]["content"], params={"inline": "1"})
    assert response.headers["Content-Disposition"].startswith("inline; ")


def test_content_head(sample):
    """HEAD sends the same headers as GET and no body."""
    server, record, _ = sample
    get = server.get(record["links"]["content"])
    head = server.head(record["links"]["content"])
    assert head.status_code == 200
    assert head.content == b""
    for name in (
        "Content-Type",
        "Content-Length",
        "ETag",
        "Repr-Digest",
        "Last-Modified",
        "Accept-Ranges",
        "X-Content-Type-Options",
        "Content-Security-Policy",
        "Content-Disposition",
    ):
        assert head.headers[name] == get.headers[name], name


@pytest.mark.parametrize(
    "spec, first, last",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=10-10", 10, 10),
        ("bytes=900-", 900, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-100", 900, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=990-5000", 990, 999),
        ("bytes=999-999", 999, 999),
        ("Bytes = 5 - 9", 5, 9),
    ],
)
def test_single_ranges(sample, spec, first, last):
    """One range answers 206 with exactly its bytes and Content-Range."""
    server, record, data = sample
    response = server.get(record["links"]["content"], headers={"Range": spec})
    assert response.status_code == 206, response.text
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/1000"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.content == data[first : last + 1]
    assert response.headers["ETag"] == f'"{sha256_hex(data)}"'


@pytest.mark.parametrize(
    "spec", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-", "bytes=-0"]
)
def test_unsatisfiable_range(sample, spec):
    """A range past the end is 416 with Content-Range bytes */size."""
    server, record, _ = sample
    before = server.snapshot()
    response = server.get(record["links"]["content"], headers={"Range": spec})
    assert_problem(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == "bytes */1000"
    assert server.snapshot() == before


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=0-1,5-6",
        "bytes=0-9, 20-29, -5",
        "bytes=abc",
        "bytes=5-1",
        "items=0-1",
        "bytes=",
        "bytes=--1",
        "0-1",
    ],
)
def test_several_or_invalid_ranges_get_whole_body(sample, spec):
    """Several ranges, or a range header that is not valid, give 200 whole."""
    server, record, data = sample
    response = server.get(record["links"]["content"], headers={"Range": spec})
    assert response.status_code == 200, response.text
    assert "Content-Range" not in response.headers
    assert response.content == data


def test_ranges_across_chunks_of_a_large_file(server):
    """Ranges deep inside a multi-megabyte file give exactly their bytes."""
    data = os.urandom(3 * 1024 * 1024 + 123)
    record = created(server.upload(data, name="large.bin"))
    url = record["links"]["content"]
    assert server.get(url).content == data
    size = len(data)
    for spec, first, last in (
        ("bytes=1500000-2600000", 1500000, 2600000),
        ("bytes=2000000-", 2000000, size - 1),
        ("bytes=-1048577", size - 1048577, size - 1),
    ):
        response = server.get(url, headers={"Range": spec})
        assert response.status_code == 206
        assert (
            response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        )
        assert response.content == data[first : last + 1]
    assert server.delete(record["links"]["self"]).status_code == 204


def test_empty_file_content(server):
    """An empty file downloads as zero bytes; a range on it is 416."""
    record = created(server.upload(b"", name="empty"))
    assert record["size"] == 0
    response = server.get(record["links"]["content"])
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"
    ranged = server.get(
        record["links"]["content"], headers={"Range": "bytes=0-"}
    )
    assert_problem(ranged, 416, "range_not_satisfiable")
    assert ranged.headers["Content-Range"] == "bytes */0"


def test_if_none_match(sample):
    """A matching If-None-Match answers 304 with the validators."""
    server, record, data = sample
    etag = f'"{sha256_hex(data)}"'
    url = record["links"]["content"]
    for value in (etag, f'"other", {etag}', "*", f"W/{etag}"):
        response = server.get(url, headers={"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
        assert response.headers["ETag"] == etag
    assert (
        server.get(url, headers={"If-None-Match": '"other"'}).status_code
        == 200
    )
    assert server.head(url, headers={"If-None-Match": etag}).status_code == 304


def test_if_match(sample):
    """If-Match with another tag is 412; with ours or * it serves."""
    server, record, data = sample
    etag = f'"{sha256_hex(data)}"'
    url = record["links"]["content"]
    assert_problem(
        server.get(url, headers={"If-Match": '"other"'}),
        412,
        "precondition_failed",
    )
    assert server.get(url, headers={"If-Match": etag}).status_code == 200
    assert server.get(url, headers={"If-Match": "*"}).status_code == 200


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def test_if_none_match_overrides_if_modified_since(sample):
    """If-None-Match decides alone when both are sent (RFC 9110 13.1.3)."""
    server, record, data = sample
    url = record["links"]["content"]
    modified = server.head(url).headers["Last-Modified"]
    response = server.get(
        url,
        headers={"If-None-Match": '"other"', "If-Modified-Since": modified},
    )
    assert response.status_code == 200
    response = server.get(
        url,
        headers={
            "If-Match": f'"{sha256_hex(data)}"',
            "If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT",
        },
    )
    assert response.status_code == 200


def test_if_modified_since(sample):
    """If-Modified-Since at or after Last-Modified is 304, before it 200."""
    server, record, _ = sample
    url = record["links"]["content"]
    modified = server.head(url).headers["Last-Modified"]
    moment = parsedate_to_datetime(modified)
    assert (
        server.get(url, headers={"If-Modified-Since": modified}).status_code
        == 304
    )
    later = http_date(moment + timedelta(hours=1))
    assert (
        server.get(url, headers={"If-Modified-Since": later}).status_code
        == 304
    )
    earlier = http_date(moment - timedelta(seconds=1))
    assert (
        server.get(url, headers={"If-Modified-Since": earlier}).status_code
        == 200
    )
    assert (
        server.get(url, headers={"If-Modified-Since": "garbage"}).status_code
        == 200
    )


def test_if_unmodified_since(sample):
    """If-Unmodified-Since before Last-Modified is 412."""
    server, record, _ = sample
    url = record["links"]["content"]
    moment = parsedate_to_datetime(server.head(url).headers["Last-Modified"])
    earlier = http_date(moment - timedelta(seconds=1))
    assert_problem(
        server.get(url, headers={"If-Unmodified-Since": earlier}),
        412,
        "precondition_failed",
    )
    same = http_date(moment)
    assert (
        server.get(url, headers={"If-Unmodified-Since": same}).status_code
        == 200
    )


def test_if_range(sample):
    """If-Range that matches lets the range apply; otherwise 200 whole."""
    server, record, data = sample
    url = record["links"]["content"]
    etag = f'"{sha256_hex(data)}"'
    modified = server.head(url).headers["Last-Modified"]

    for validator in (etag, modified):
        response = server.get(
            url, headers={"Range": "bytes=0-9", "If-Range": validator}
        )
        assert response.status_code == 206, validator
        assert response.content == data[:10]

    stale_date = http_date(parsedate_to_datetime(modified) - timedelta(days=1))
    for validator in ('"other"', f"W/{etag}", stale_date):
        response = server.get(
            url, headers={"Range": "bytes=0-9", "If-Range": validator}
        )
        assert response.status_code == 200, validator
        assert response.content == data
