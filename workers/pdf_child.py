"""PDF text extraction in a child process, under limits (``python -m`` this module).

A small PDF can expand to millions of characters and many seconds of CPU (a
compressed content stream is a decompression bomb), so the parent never parses
PDFs itself: it starts this module with ``<cpu_s> <memory_bytes> <max_chars>``,
writes the file to its stdin and reads UTF-8 text from its stdout.

The child limits itself before it imports the parser: ``RLIMIT_CPU`` (the kernel
stops it with SIGXCPU, then SIGKILL), ``RLIMIT_AS`` (allocations fail:
``MemoryError``) and at most ``max_chars`` characters written (pages after the
cap are not extracted).  Exit codes are the protocol: 0 (the text is on stdout),
``EXIT_ENCRYPTED``, ``EXIT_CORRUPT``, ``EXIT_MEMORY``; killed by SIGXCPU or SIGKILL
means the CPU limit.
"""

from __future__ import annotations

import io
import resource
import sys

__all__ = ["EXIT_CORRUPT", "EXIT_ENCRYPTED", "EXIT_MEMORY", "main"]

EXIT_ENCRYPTED = 10
EXIT_CORRUPT = 11
EXIT_MEMORY = 12


def _limit(kind: int, value: int) -> None:
    _, hard = resource.getrlimit(kind)
    cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (cap, hard))


def main(argv: list[str]) -> int:
    cpu_s, memory_bytes, max_chars = (int(a) for a in argv)
    data = sys.stdin.buffer.read()
    _limit(resource.RLIMIT_CPU, max(1, cpu_s))
    _limit(resource.RLIMIT_AS, memory_bytes)
    try:
        import pypdf
        from pypdf.errors import FileNotDecryptedError

        out: list[str] = []
        size = 0
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                return EXIT_ENCRYPTED
            for page in reader.pages:
                text = page.extract_text() or ""
                out.append(text[: max_chars - size])
                size += len(out[-1]) + 1
                if size >= max_chars:
                    break
        except FileNotDecryptedError:
            return EXIT_ENCRYPTED
        except MemoryError:
            raise
        except Exception:
            # pypdf raises many kinds of errors on damaged input (PdfReadError, but
            # also ValueError, KeyError, struct.error ...): all mean "not readable".
            return EXIT_CORRUPT
        sys.stdout.buffer.write("\n".join(out)[:max_chars].encode("utf-8", "replace"))
        sys.stdout.flush()
        return 0
    except MemoryError:
        return EXIT_MEMORY


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
