"""Decompression bombs in uploads are bounded (issue 11, #5): PDF text is extracted
in a child process under CPU-time, memory and output limits, and text is capped by
characters as well as by words."""

from __future__ import annotations

import io
import resource
import time
import zlib

import pytest

from herald.workers.extract import ExtractError, ExtractLimits, extract_text, split


def bomb_pdf(chars: int) -> bytes:
    """A one-page PDF whose compressed content stream draws ``chars`` letters with no
    space between them: a few KB that expand to ``chars`` characters of text."""
    content = b"BT /F1 12 Tf 72 712 Td (" + b"A" * chars + b") Tj ET"
    stream = zlib.compress(content, 9)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    )
    return out.getvalue()


def test_text_without_spaces_is_capped_by_characters():
    cut = split("A" * 10_000, 300, 200_000, max_chars=1_000)
    assert cut.limited and cut.chars == 1_000 and cut.tokens == 1
    words = split("ab cd ef gh", 2, 100, max_chars=6)
    assert [c.text for c in words.chunks] == ["ab cd", "e"] and words.limited
    assert not split("ab cd", 2, 100, max_chars=5).limited


def test_a_pdf_bomb_is_cut_at_the_character_cap_in_a_child_process():
    data = bomb_pdf(2_000_000)
    assert len(data) < 10_000
    own_before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    text = extract_text("bomb.pdf", data, ExtractLimits(cpu_s=20, max_chars=50_000))
    assert len(text) == 50_000 and set(text) == {"A"}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - children_before
    own = resource.getrusage(resource.RUSAGE_SELF).ru_utime - own_before
    print(f"child CPU {children:.2f} s, this process {own:.2f} s")
    assert children > own, "the PDF was parsed in this process, not in a child"


def test_a_pdf_bomb_over_the_cpu_limit_fails_with_a_clear_code():
    began = time.monotonic()
    with pytest.raises(ExtractError) as caught:
        extract_text("bomb.pdf", bomb_pdf(40_000_000), ExtractLimits(cpu_s=1))
    print(f"refused after {time.monotonic() - began:.2f} s: {caught.value.message}")
    assert caught.value.code == "extraction_limit"
    assert "CPU" in caught.value.message


def test_a_pdf_over_the_memory_limit_fails_with_a_clear_code():
    with pytest.raises(ExtractError) as caught:
        extract_text("bomb.pdf", bomb_pdf(40_000_000), ExtractLimits(cpu_s=30, memory_mb=64))
    assert caught.value.code == "extraction_limit", caught.value.message
    assert "MB" in caught.value.message


def test_a_readable_pdf_still_extracts():
    assert extract_text("small.pdf", bomb_pdf(100)) == "A" * 100
