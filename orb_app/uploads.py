"""Receive an upload: stream the body to a pending blob while hashing.

Two body forms arrive at `POST /api/v1/files`: `multipart/form-data` with
one `file` part, or a raw body. Both are read from the WSGI input in large
blocks, never held whole in memory, and end as an `Upload` whose bytes are
on disk (fsynced) but not yet published or recorded.
"""

import base64
import binascii
import io
import json
import queue
import re
import threading
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import parse_qsl
from urllib.parse import unquote_to_bytes

from flask import Request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data
from werkzeug.sansio.multipart import Epilogue
from werkzeug.sansio.multipart import Field
from werkzeug.sansio.multipart import File
from werkzeug.sansio.multipart import MultipartDecoder
from werkzeug.sansio.multipart import NeedData

from .guards import stalled
from .labels import check_meta_entry
from .labels import check_metadata
from .labels import clean_name
from .problems import Problem
from .storage import CHUNK_SIZE
from .storage import BlobStore
from .storage import PendingBlob

META_HEADER_PREFIX = "X-Orb-Meta-"
MULTIPART_OVERHEAD = 64 * 1024
MAX_FORM_FIELD_BYTES = 96 * 1024
MAX_PARTS = 16
DEFAULT_CONTENT_TYPE = "application/octet-stream"
RECEIVE_BUFFER = 1024 * 1024

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_FILENAME_STAR = re.compile(r"(?:^|;)\s*filename\*\s*=\s*([^;]*)", re.I)
_SF_KEY = re.compile(r"^[a-z*][a-z0-9_.*-]*$")
_SF_BYTES = re.compile(r"^:([A-Za-z0-9+/=]*):$")


@dataclass
class Upload:
    """A received upload, its bytes in a pending blob."""

    name: str
    content_type: str
    metadata: dict[str, str]
    pending: PendingBlob
    sha256: str = ""
    size: int = 0
    extra: dict = field(default_factory=dict)


class BodyReader:
    """Read a request body in blocks, enforcing length and size limits."""

    def __init__(self, request: Request, limit: int) -> None:
        self.environ = request.environ
        self.stream = request.environ["wsgi.input"]
        self.expected = request.content_length
        self.limit = limit
        self.received = 0
        self.chunked = "chunked" in request.headers.get(
            "Transfer-Encoding", ""
        ).lower()

    def check_framing(self) -> None:
        """Refuse a body without a length, or one announced too large."""
        if self.expected is None and not self.chunked:
            raise Problem(
                411,
                "length_required",
                "Send a Content-Length or use chunked transfer encoding.",
            )

        if self.expected is not None and self.expected > self.limit:
            raise _too_large(self.limit)

    def count(self, size: int) -> None:
        """Add `size` received bytes, refusing a body over the limit."""
        self.received += size
        if self.received > self.limit:
            raise _too_large(self.limit)

    def read(self) -> bytes:
        """Return the next block of the body, b"" at its end."""
        try:
            block = self.stream.read(CHUNK_SIZE)
        except Exception as error:
            if stalled(error):
                raise

            raise Problem(
                400,
                "incomplete_body",
                "The request body ended early or was malformed.",
            ) from None

        self.count(len(block))

        if not block and self.expected and self.received < self.expected:
            raise Problem(
                400,
                "incomplete_body",
                "The request body ended before its Content-Length.",
            )

        return block


def receive_upload(request: Request, store: BlobStore, limit: int) -> Upload:
    """Read the upload in `request` into a pending blob and check it."""
    expected = expected_sha256(request)
    header_meta = metadata_from_headers(request)
    mimetype, options = parse_options_header(
        request.headers.get("Content-Type", "")
    )
    if mimetype == "multipart/form-data":
        reader = BodyReader(request, limit + MULTIPART_OVERHEAD)
        reader.check_framing()
        upload = _receive_multipart(reader, options, store, limit)
    else:
        name = name_from_request(request)
        reader = BodyReader(request, limit)
        reader.check_framing()
        upload = Upload(
            name=name,
            content_type=clean_content_type(
                request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
            ),
            metadata={},
            pending=store.begin(),
        )
        _copy_raw(reader, upload.pending)

    try:
        upload.metadata = check_metadata({**upload.metadata, **header_meta})
        upload.size = upload.pending.size
        upload.sha256 = upload.pending.finish()
        if expected and expected != upload.sha256:
            raise Problem(
                400,
                "digest_mismatch",
                "The body does not match the digest sent with it.",
            )
    except BaseException:
        upload.pending.discard()
        raise

    return upload


def _copy_raw(reader: BodyReader, pending: PendingBlob) -> None:
    try:
        if not _copy_from_socket(reader, pending):
            while block := reader.read():
                pending.write(block)
    except BaseException:
        pending.discard()
        raise


def _copy_from_socket(reader: BodyReader, pending: PendingBlob) -> bool:
    """Receive a Content-Length body straight from gunicorn's socket.

    gunicorn's body reader copies every block through several BytesIO
    buffers; here the bytes it already holds are taken first, then the
    rest is received into reused buffers that are hashed and written from
    in place, by a helper thread while the next block arrives. Answers
    False (nothing read) for any other server or body framing, which then
    goes through the WSGI input.
    """
    direct = _direct_body(reader)
    if direct is None:
        return False

    body, length_reader, sock = direct
    held = body.buf.getvalue()
    body.buf = io.BytesIO()
    ahead = length_reader.unreader.take_buffered()
    if ahead:
        mine = ahead[: length_reader.length]
        length_reader.unreader.unread(ahead[len(mine):])
        length_reader.length -= len(mine)
        held += mine

    if held:
        reader.count(len(held))
        pending.write(held)

    def fill(buffer: memoryview) -> memoryview:
        filled = 0
        while filled < len(buffer) and length_reader.length > 0:
            wanted = min(len(buffer) - filled, length_reader.length)
            try:
                received = sock.recv_into(buffer[filled:filled + wanted])
            except OSError:
                received = 0

            if not received:
                body.failed = True
                raise Problem(
                    400,
                    "incomplete_body",
                    "The request body ended before its Content-Length.",
                )

            length_reader.length -= received
            reader.count(received)
            filled += received

        return buffer[:filled]

    if length_reader.length <= RECEIVE_BUFFER:
        pending.write(fill(memoryview(bytearray(length_reader.length))))
        return True

    with _WriteBehind(pending) as writer:
        while length_reader.length > 0:
            writer.put(fill(writer.take()))

    return True


class _WriteBehind:
    """Hash and write blocks in a helper thread while the next arrives.

    Receiving, hashing and writing all release the GIL, so on two cores
    the helper overlaps the disk and hash work with the socket reads.
    """

    def __init__(self, pending: PendingBlob, buffers: int = 3) -> None:
        self.pending = pending
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        self.full: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        for _ in range(buffers):
            self.free.put(memoryview(bytearray(RECEIVE_BUFFER)))
        self.thread = threading.Thread(
            target=self._run, name="orb-write-behind", daemon=True
        )

    def __enter__(self) -> "_WriteBehind":
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.full.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error

    def take(self) -> memoryview:
        """Return a free buffer; raise what the helper failed with."""
        buffer = self.free.get()
        if self.error is not None:
            raise self.error

        return buffer

    def put(self, block: memoryview) -> None:
        """Hand a filled block (a view of a taken buffer) to the helper."""
        self.full.put(block)

    def _run(self) -> None:
        while (block := self.full.get()) is not None:
            if self.error is None:
                try:
                    self.pending.write(block)
                except BaseException as error:
                    self.error = error

            self.free.put(memoryview(block.obj))


def _direct_body(reader: BodyReader):
    """Return (body, length reader, socket) if gunicorn's parts are there."""
    if reader.chunked or not reader.expected:
        return None

    body = reader.stream
    sock = reader.environ.get("gunicorn.socket")
    length_reader = getattr(body, "reader", None)
    unreader = getattr(length_reader, "unreader", None)
    if (
        sock is None
        or type(length_reader).__name__ != "LengthReader"
        or not isinstance(getattr(body, "buf", None), io.BytesIO)
        or not hasattr(unreader, "take_buffered")
        or not hasattr(sock, "recv_into")
    ):
        return None

    buffered = body.buf.getbuffer().nbytes
    if length_reader.length + buffered != reader.expected:
        return None

    return body, length_reader, sock


def _receive_multipart(
    reader: BodyReader, options: dict, store: BlobStore, limit: int
) -> Upload:
    boundary = options.get("boundary", "").encode("latin-1", "replace")
    if not boundary or len(boundary) > 200:
        raise Problem(
            400, "invalid_multipart", "The multipart boundary is missing."
        )

    parser = _MultipartUpload(boundary, store, limit)
    try:
        parser.run(reader)
    except BaseException:
        parser.discard()
        raise

    return parser.result()


class _MultipartUpload:
    """Walk multipart events, streaming the `file` part to a blob."""

    def __init__(self, boundary: bytes, store: BlobStore, limit: int) -> None:
        self.decoder = MultipartDecoder(
            boundary, MAX_FORM_FIELD_BYTES + CHUNK_SIZE, max_parts=MAX_PARTS
        )
        self.store = store
        self.limit = limit
        self.upload: Upload | None = None
        self.files_seen = 0
        self.target: str | None = None
        self.field_data = bytearray()
        self.metadata: dict[str, str] = {}

    def run(self, reader: BodyReader) -> None:
        finished = False
        while not finished:
            block = reader.read()
            try:
                self.decoder.receive_data(block or None)
                finished = self._drain()
            except ValueError:
                raise Problem(
                    400, "invalid_multipart", "The multipart body is malformed."
                ) from None
            except Exception as error:
                if isinstance(error, Problem):
                    raise
                raise Problem(
                    400, "invalid_multipart", "The multipart body is malformed."
                ) from None

            if not block and not finished:
                raise Problem(
                    400, "invalid_multipart", "The multipart body is incomplete."
                )

    def _drain(self) -> bool:
        while True:
            event = self.decoder.next_event()
            if isinstance(event, NeedData):
                return False

            if isinstance(event, Epilogue):
                return True

            if isinstance(event, File):
                self._start_file(event)
            elif isinstance(event, Field):
                self._start_field(event.name)
            elif isinstance(event, Data):
                self._take_data(event)

    def _start_file(self, event: File) -> None:
        if event.name != "file":
            self.target = None
            return

        self.files_seen += 1
        if self.files_seen > 1:
            raise Problem(
                400, "invalid_multipart", "Send exactly one part named file."
            )

        content_type = event.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        self.upload = Upload(
            name=clean_name(event.filename),
            content_type=clean_content_type(content_type),
            metadata={},
            pending=self.store.begin(),
        )
        self.target = "file"

    def _start_field(self, name: str) -> None:
        if name == "file":
            raise Problem(
                400,
                "invalid_multipart",
                "The file part needs a filename in its Content-Disposition.",
            )

        self.target = "metadata" if name == "metadata" else None
        self.field_data.clear()

    def _take_data(self, event: Data) -> None:
        if self.target == "file":
            pending = self.upload.pending
            if pending.size + len(event.data) > self.limit:
                raise _too_large(self.limit)

            pending.write(event.data)
        elif self.target == "metadata":
            self.field_data.extend(event.data)
            if len(self.field_data) > MAX_FORM_FIELD_BYTES:
                raise Problem(
                    400, "invalid_metadata", "The metadata field is too large."
                )

            if not event.more_data:
                self.metadata = _parse_metadata_field(bytes(self.field_data))

    def result(self) -> Upload:
        if self.upload is None:
            raise Problem(
                400, "invalid_multipart", "Send exactly one part named file."
            )

        self.upload.metadata = self.metadata
        return self.upload

    def discard(self) -> None:
        if self.upload is not None:
            self.upload.pending.discard()


def _parse_metadata_field(raw: bytes) -> dict[str, str]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Problem(
            400, "invalid_metadata", "The metadata field is not valid JSON."
        ) from None

    return check_metadata(value)


def name_from_request(request: Request) -> str:
    """Return the file name of a raw upload from the query or headers."""
    if "name" in request.args:
        return clean_name(_query_name(request))

    disposition = request.headers.get("Content-Disposition", "")
    if disposition:
        # Werkzeug folds filename* into filename and the later one wins;
        # RFC 6266 says filename* wins wherever it stands.
        extended = _FILENAME_STAR.search(disposition)
        if extended:
            return clean_name(_decode_ext_value(extended.group(1)))

        _, options = parse_options_header(disposition)
        if "filename" in options:
            return clean_name(_header_text(options["filename"]))

    raise Problem(
        400,
        "invalid_name",
        "Name the file with ?name= or a Content-Disposition filename.",
    )


def _query_name(request: Request) -> str:
    # Werkzeug keeps undecodable escapes as text ("%FF"), which would
    # store a name the client never sent; refuse it instead.
    query = request.query_string.decode("latin-1")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise _not_utf8_name() from None

    return next(value for key, value in pairs if key == "name")


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 8187 `UTF-8''<percent-encoded>` value strictly."""
    parts = value.strip().split("'", 2)
    if len(parts) != 3 or parts[0].lower() != "utf-8" or not parts[2]:
        raise Problem(
            400,
            "invalid_name",
            "filename* must be UTF-8'' followed by a percent-encoded name.",
        )

    try:
        return unquote_to_bytes(parts[2]).decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(
            400, "invalid_name", "The name in filename* is not valid UTF-8."
        ) from None


def _not_utf8_name() -> Problem:
    return Problem(400, "invalid_name", "The name is not valid UTF-8.")


def clean_content_type(value: str) -> str:
    """Return a stored content type, or raise 400 on a hostile one."""
    value = value.strip()
    if len(value) > 255 or not value.isprintable() or "/" not in value:
        raise Problem(
            400, "invalid_content_type", "The content type is not valid."
        )

    return value


def metadata_from_headers(request: Request) -> dict[str, str]:
    """Collect `X-Orb-Meta-<key>` headers; keys arrive lowercased."""
    meta: dict[str, str] = {}
    for name, value in request.headers.items():
        if not name.lower().startswith(META_HEADER_PREFIX.lower()):
            continue

        key = name[len(META_HEADER_PREFIX):].lower()
        text = _header_text(value)
        check_meta_entry(key, text)
        meta[key] = text

    return meta


def expected_sha256(request: Request) -> str:
    """Return the sha256 a client announced for its body, or ""."""
    announced = set()
    hex_value = request.headers.get("X-Orb-SHA256", "").strip()
    if hex_value:
        if not _HEX_SHA256.match(hex_value):
            raise Problem(
                400,
                "invalid_digest",
                "X-Orb-SHA256 must be 64 hexadecimal characters.",
            )
        announced.add(hex_value.lower())

    content_digest = request.headers.get("Content-Digest", "")
    if content_digest.strip():
        announced.add(_content_digest_sha256(content_digest))

    if len(announced) > 1:
        raise Problem(
            400,
            "digest_mismatch",
            "X-Orb-SHA256 and Content-Digest disagree.",
        )

    return announced.pop() if announced else ""


def _content_digest_sha256(header: str) -> str:
    """Return the hex sha-256 of an RFC 9530 Content-Digest dictionary.

    A malformed header, or one without sha-256, is refused rather than
    skipped: a client that asks for verification must get it.
    """
    members: dict[str, str] = {}
    for member in header.split(","):
        key, equals, value = member.strip().partition("=")
        if not equals or not _SF_KEY.match(key):
            raise _bad_content_digest()

        members[key] = value.split(";", 1)[0].strip()

    match = _SF_BYTES.match(members.get("sha-256", ""))
    if match is None:
        raise _bad_content_digest()

    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_content_digest() from None

    if len(raw) != 32:
        raise _bad_content_digest()

    return raw.hex()


def _bad_content_digest() -> Problem:
    return Problem(
        400,
        "invalid_digest",
        "Content-Digest must hold sha-256=:<32 bytes in base64>:.",
    )


def _header_text(value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "too_large", f"The upload exceeds the limit of {limit} bytes."
    )
