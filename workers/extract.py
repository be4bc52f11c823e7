"""Text extraction and chunking: pure functions, no I/O, safe to run in a thread.

``extract_text(filename, data, limits)`` turns one file's bytes into plain text, or
raises ``ExtractError`` with a stable code (``unsupported_file_type``,
``undecodable_text``, ``corrupt_file``, ``encrypted_file``, ``extraction_limit``)
and a message safe to show the uploader.  PDFs are parsed in a child process under
CPU-time and memory limits (``pdf_child``); every format's text is cut at
``limits.max_chars``.  ``split(text, chunk_tokens, max_tokens, max_chars)`` cuts
text into chunks of at most ``chunk_tokens`` tokens and keeps at most
``max_tokens`` tokens and ``max_chars`` characters (text without spaces is one
long token: the character cap is what bounds it).

A *token* is a whitespace-separated word: cheap, deterministic and the same for
every language that separates words with spaces.  Chunks are slices of the
original text (line breaks kept), cut between words.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

import orjson

from herald.journal.sources.formats import CONTENT_TYPES

__all__ = [
    "CONTENT_TYPES",
    "Chunk",
    "ExtractError",
    "ExtractLimits",
    "Split",
    "content_type_for",
    "count_tokens",
    "extension_of",
    "extract_text",
    "split",
]

_WORD = re.compile(r"\S+")


class ExtractError(Exception):
    """A file that cannot be read as text; ``code`` is stable, ``message`` is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Bounds on extracting one file: the PDF child's CPU seconds and address space,
    and the characters of text kept (any format)."""

    cpu_s: int = 10
    memory_mb: int = 512
    max_chars: int = 2_000_000


def extension_of(filename: str) -> str:
    """The lower-cased extension with its dot (``""`` when there is none)."""
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower()


def content_type_for(filename: str) -> str | None:
    """The content type Herald reads ``filename`` as, or None when it is unsupported."""
    return CONTENT_TYPES.get(extension_of(filename))


def extract_text(filename: str, data: bytes, limits: ExtractLimits | None = None) -> str:
    """The text of one file, chosen by its extension, at most ``limits.max_chars``
    characters.  Blocking (CPU, or waiting for the PDF child): call it in a thread."""
    limits = limits or ExtractLimits()
    # PostgreSQL text cannot hold NUL; in text it only ever separates things.
    return _extract(filename, data, limits)[: limits.max_chars].replace("\x00", " ")


def _extract(filename: str, data: bytes, limits: ExtractLimits) -> str:
    ext = extension_of(filename)
    if ext not in CONTENT_TYPES:
        raise ExtractError(
            "unsupported_file_type",
            f"{_name(filename)}: {ext or 'no extension'} is not supported "
            f"(supported: {', '.join(sorted(CONTENT_TYPES))})",
        )
    if ext == ".pdf":
        return _pdf(filename, data, limits)
    text = _utf8(filename, data)
    if ext in (".html", ".htm"):
        return _html(text)
    if ext == ".json":
        return _json(filename, text)
    if ext == ".csv":
        return _csv(filename, text)
    return text


def _name(filename: str) -> str:
    return PurePosixPath(filename.replace("\\", "/")).name or filename


def _utf8(filename: str, data: bytes) -> str:
    try:
        # utf-8-sig: editors on Windows prefix a BOM that is not part of the text.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ExtractError(
            "undecodable_text", f"{_name(filename)} is not valid UTF-8 (byte {e.start})"
        ) from e


# Tags whose content is never shown, and tags that separate words when rendered.
_HIDDEN = frozenset({"script", "style", "template", "noscript"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "td", "th", "tr", "ul",
    }
)  # fmt: skip


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _html(text: str) -> str:
    # html.parser never raises on malformed markup: it recovers like a browser.
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _json(filename: str, text: str) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ExtractError("corrupt_file", f"{_name(filename)} is not valid JSON: {e}") from e
    return "\n".join(_leaves(value))


def _leaves(value: Any) -> Iterator[str]:
    """Every string and number in document order; keys and literals carry little text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.strip():
                yield item
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int | float):
            yield str(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _csv(filename: str, text: str) -> str:
    try:
        rows = csv.reader(io.StringIO(text, newline=""), strict=True)
        return "\n".join(" ".join(c for c in row if c.strip()) for row in rows if any(row))
    except csv.Error as e:
        raise ExtractError("corrupt_file", f"{_name(filename)} is not valid CSV: {e}") from e


def _pdf(filename: str, data: bytes, limits: ExtractLimits) -> str:
    from herald.workers import pdf_child

    args = [str(limits.cpu_s), str(limits.memory_mb * 1024 * 1024), str(limits.max_chars)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "herald.workers.pdf_child", *args],
            input=data,
            capture_output=True,
            # CPU time is the child's own limit; this bounds waiting (I/O, a stall).
            timeout=limits.cpu_s * 3 + 5,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ExtractError(
            "extraction_limit", f"{_name(filename)}: extracting its text took too long"
        ) from e
    code = done.returncode
    if code == 0:
        return done.stdout.decode("utf-8", "replace")
    if code == pdf_child.EXIT_ENCRYPTED:
        raise ExtractError("encrypted_file", f"{_name(filename)} is password-protected")
    if code == pdf_child.EXIT_CORRUPT:
        raise ExtractError("corrupt_file", f"{_name(filename)} is not a readable PDF")
    if code == pdf_child.EXIT_MEMORY:
        raise ExtractError(
            "extraction_limit",
            f"{_name(filename)}: extracting its text needs more than {limits.memory_mb} MB",
        )
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ExtractError(
            "extraction_limit",
            f"{_name(filename)}: extracting its text needs more than {limits.cpu_s} s of CPU",
        )
    raise ExtractError("corrupt_file", f"{_name(filename)} is not a readable PDF")


def count_tokens(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return sum(1 for _ in _WORD.finditer(text))


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Split:
    chunks: list[Chunk]
    tokens: int  # tokens kept (the sum over chunks)
    limited: bool  # True when max_tokens or max_chars cut the text short

    @property
    def chars(self) -> int:
        """Characters kept (the sum over chunks)."""
        return sum(len(c.text) for c in self.chunks)


def split(text: str, chunk_tokens: int, max_tokens: int, max_chars: int | None = None) -> Split:
    """Cut ``text`` into chunks of ``chunk_tokens`` words, keeping the first
    ``max_tokens`` words (``max_tokens`` may be 0: nothing is kept) and no more than
    ``max_chars`` characters of chunk text (a word crossing it is cut there)."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    chunks: list[Chunk] = []
    kept = 0
    chars = 0  # characters in finished chunks
    start = end = 0
    in_chunk = 0
    limited = False
    for match in _WORD.finditer(text):
        if kept == max_tokens:
            limited = True
            break
        if in_chunk == 0:
            start = match.start()
        end = match.end()
        if max_chars is not None and chars + (end - start) > max_chars:
            end = start + max(0, max_chars - chars)
            limited = True
            if end > start and text[start:end].strip():
                in_chunk += 1
                kept += 1
            else:
                end = match.start()  # nothing of this word fits
            break
        in_chunk += 1
        kept += 1
        if in_chunk == chunk_tokens:
            chunks.append(Chunk(len(chunks), text[start:end], in_chunk))
            chars += end - start
            in_chunk = 0
    if in_chunk:
        chunks.append(Chunk(len(chunks), text[start:end].rstrip(), in_chunk))
    return Split(chunks, kept, limited)
