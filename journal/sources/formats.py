"""The file formats Herald reads as text, shared by the API (which refuses any
other with a 415 before storing the file) and the worker (which extracts them)."""

from __future__ import annotations

__all__ = ["CONTENT_TYPES"]

# Extension -> the content type Herald reads a file with that extension as.
CONTENT_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".json": "application/json",
    ".csv": "text/csv",
    ".pdf": "application/pdf",
}
