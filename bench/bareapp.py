"""A bare Flask JSON route: the framework's ceiling for `bench/run`.

Served by gunicorn with Orb's own `gunicorn.conf.py`, so the difference
between this and Orb's record GET is Orb's own request path.
"""

from flask import Flask
from flask import jsonify

app = Flask(__name__)

RECORD_ID = "0b0e5c3e-6a4f-4a8e-9d7b-2f4f3c1d2e10"
RECORD = {
    "id": RECORD_ID,
    "name": "small-000.bin",
    "size": 1024,
    "content_type": "application/octet-stream",
    "sha256": "0" * 64,
    "metadata": {},
    "created_at": "2026-01-01T00:00:00.000000Z",
    "updated_at": "2026-01-01T00:00:00.000000Z",
    "links": {
        "self": f"/api/v1/files/{RECORD_ID}",
        "content": f"/api/v1/files/{RECORD_ID}/content",
    },
}


@app.get("/record")
def get_record():
    """Answer one fixed record as JSON."""
    return jsonify(RECORD)
