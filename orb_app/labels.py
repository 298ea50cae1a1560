"""Rules for the labels a client attaches to a file: name and metadata."""

import re
import unicodedata

from .problems import Problem

MAX_NAME_BYTES = 255
MAX_META_KEYS = 64
MAX_META_VALUE_BYTES = 1024
META_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Bidirectional overrides and isolates can make a name read differently
# from what it is (a classic trick to disguise a file's extension).
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_name(raw: object) -> str:
    """Return the NFC form of a file name, or raise 400 `invalid_name`."""
    if not isinstance(raw, str):
        raise Problem(400, "invalid_name", "The name must be a string.")

    name = unicodedata.normalize("NFC", raw)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise Problem(
            400, "invalid_name", "The name is not valid UTF-8."
        ) from None

    if not 1 <= size <= MAX_NAME_BYTES:
        raise Problem(
            400,
            "invalid_name",
            f"The name must be 1 to {MAX_NAME_BYTES} bytes of UTF-8.",
        )

    for char in name:
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            raise Problem(
                400,
                "invalid_name",
                "The name must not contain control characters.",
            )

    return name


def check_metadata(meta: object) -> dict[str, str]:
    """Validate a metadata object and return it as a plain dict."""
    if not isinstance(meta, dict):
        raise Problem(
            400, "invalid_metadata", "Metadata must be a JSON object."
        )

    if len(meta) > MAX_META_KEYS:
        raise Problem(
            400,
            "invalid_metadata",
            f"Metadata may hold at most {MAX_META_KEYS} keys.",
        )

    for key, value in meta.items():
        check_meta_entry(key, value)

    return dict(meta)


def check_meta_entry(key: object, value: object) -> None:
    """Validate one metadata key and its value."""
    if not isinstance(key, str) or not META_KEY_RE.match(key):
        raise Problem(
            400,
            "invalid_metadata",
            "Metadata keys are 1 to 64 of A-Z a-z 0-9 _ . -",
        )

    if not isinstance(value, str):
        raise Problem(
            400,
            "invalid_metadata",
            f"Metadata value of {key!r} must be a string.",
        )

    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise Problem(
            400, "invalid_metadata", f"Metadata value of {key!r} is not UTF-8."
        ) from None

    if size > MAX_META_VALUE_BYTES:
        raise Problem(
            400,
            "invalid_metadata",
            f"Metadata values are at most {MAX_META_VALUE_BYTES} bytes.",
        )


def merge_metadata(
    current: dict[str, str], patch: object
) -> dict[str, str]:
    """Apply an RFC 7396 merge patch to flat string metadata."""
    if not isinstance(patch, dict):
        raise Problem(
            400, "invalid_metadata", "Metadata must be a JSON object."
        )

    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
            continue

        check_meta_entry(key, value)
        merged[key] = value

    return check_metadata(merged)
