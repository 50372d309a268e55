"""``multipart/form-data`` bodies parsed in memory (an artifact is never spooled to disk).

Starlette's form parser writes file parts over 1 MiB to temporary files; a model artifact
must reach only the encrypted blob store, so publishing parses its parts here instead.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from openmaas.errors import BadRequestError

__all__ = ["is_multipart", "parse_parts"]


def is_multipart(content_type: str) -> bool:
    """Whether a Content-Type header names a form-data body."""
    return content_type.lower().startswith("multipart/form-data")


def _name_of(disposition: bytes) -> str | None:
    kind, options = parse_options_header(disposition)
    if kind != b"form-data" or b"name" not in options:
        return None
    return options[b"name"].decode("utf-8", "replace")


def parse_parts(body: bytes, content_type: str, allowed: tuple[str, ...]) -> dict[str, bytes]:
    """The named parts of a form-data ``body``; each name at most once, only ``allowed``."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequestError(
            "a multipart/form-data body needs a boundary in its Content-Type", field="body"
        )
    parts: dict[str, bytes] = {}
    chunks: list[bytes] = []
    header: dict[str, bytes] = {}
    field_name: list[bytes] = []
    field_value: list[bytes] = []

    def on_part_begin() -> None:
        chunks.clear()
        header.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.append(data[start:end])

    def on_header_end() -> None:
        header[b"".join(field_name).decode("latin-1").lower()] = b"".join(field_value)
        field_name.clear()
        field_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        chunks.append(data[start:end])

    def on_part_end() -> None:
        name = _name_of(header.get("content-disposition", b""))
        if name not in allowed:
            raise BadRequestError(
                f"unexpected form part {name!r}; send parts named {', '.join(allowed)}",
                field="body",
            )
        if name in parts:
            raise BadRequestError(f"the form part {name!r} came twice", field=name)
        parts[name] = b"".join(chunks)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequestError(f"the multipart body cannot be read: {exc}", field="body") from exc
    return parts
