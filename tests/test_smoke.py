"""A first pass over every files route on both backends."""

import hashlib
import os


def test_upload_read_download_delete(server):
    """Upload, read, download whole and by range, then delete a file."""
    data = os.urandom(200_000)
    created = server.upload(data, name="smoke.bin")
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert created.headers["Location"] == f"/api/v1/files/{record['id']}"

    content = server.get(record["links"]["content"])
    assert content.content == data

    part = server.get(record["links"]["content"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]

    assert server.delete(record["links"]["self"]).status_code == 204
    assert server.get(record["links"]["self"]).status_code == 404
