"""Text extraction per format, and chunking with the token limit."""

from __future__ import annotations

import pytest

from herald.api import uploads
from herald.workers.extract import (
    CONTENT_TYPES,
    ExtractError,
    content_type_for,
    count_tokens,
    extract_text,
    split,
)
from tests.data.documents import make_pdf


def test_the_api_accepts_exactly_the_formats_the_worker_reads():
    assert uploads.CONTENT_TYPES == CONTENT_TYPES
    assert set(CONTENT_TYPES) == uploads.SUPPORTED_EXTENSIONS


@pytest.mark.parametrize("name", ["notes.txt", "README.md", "x.markdown"])
def test_plain_text_is_utf8_and_a_bom_is_dropped(name):
    assert extract_text(name, "\ufeffhéllo wörld\nline two".encode()) == "héllo wörld\nline two"


def test_nul_characters_become_spaces_since_postgres_text_cannot_hold_them():
    assert extract_text("a.txt", b"one\x00two") == "one two"
    assert extract_text("a.json", b'["x\\u0000y"]') == "x y"


@pytest.mark.parametrize("name", ["a.txt", "a.md", "a.html", "a.json", "a.csv"])
def test_invalid_utf8_is_undecodable_text_naming_the_byte(name):
    with pytest.raises(ExtractError) as e:
        extract_text(name, b"good start \xff\xfe bad")
    assert e.value.code == "undecodable_text"
    assert "a." in e.value.message and "byte 11" in e.value.message


def test_html_keeps_visible_text_and_drops_script_and_style():
    html = b"""<!doctype html><html><head><title>Title here</title>
    <style>body { color: red }</style><script>var hidden = "no";</script></head>
    <body><h1>Heading</h1><p>First&nbsp;para with <b>bold</b>word &amp; more</p>
    <div>Second<br>line</div><noscript>enable js</noscript></body></html>"""
    text = extract_text("page.html", html)
    assert text.splitlines() == [
        "Title here",
        "Heading",
        "First para with boldword & more",  # &nbsp; separates words too
        "Second",
        "line",
    ]
    assert "color" not in text and "hidden" not in text and "enable js" not in text


def test_malformed_html_still_yields_its_text():
    assert extract_text("x.htm", b"<p>unclosed <b>tags <i>here") == "unclosed tags here"


def test_json_flattens_strings_and_numbers_in_document_order():
    doc = b'{"title": "Report", "n": 3, "ok": true, "none": null,' \
          b' "items": [{"a": "alpha"}, ["beta", 2.5]], "blank": "  "}'  # fmt: skip
    assert extract_text("d.json", doc).splitlines() == ["Report", "3", "alpha", "beta", "2.5"]


def test_invalid_json_is_a_corrupt_file():
    with pytest.raises(ExtractError) as e:
        extract_text("d.json", b'{"a": ')
    assert e.value.code == "corrupt_file"
    assert "d.json is not valid JSON" in e.value.message


def test_csv_rows_become_lines_of_their_cells():
    data = b'name,city\n"Smith, Jo",Paris\n\n"multi\nline",Rome\n'
    assert extract_text("t.csv", data) == "name city\nSmith, Jo Paris\nmulti\nline Rome"


def test_csv_with_broken_quoting_is_a_corrupt_file():
    with pytest.raises(ExtractError) as e:
        extract_text("t.csv", b'a,"b"c\n')
    assert e.value.code == "corrupt_file"


def test_pdf_text_of_every_page():
    text = extract_text("doc.pdf", make_pdf("Hello PDF world", "page (two)"))
    assert text.splitlines() == ["Hello PDF world", "page (two)"]


@pytest.mark.parametrize(
    "data",
    [b"not a pdf at all", make_pdf("truncated document")[:150], b"", b"%PDF-1.7\n%%EOF\n"],
    ids=["garbage", "truncated", "empty", "header-only"],
)
def test_a_damaged_pdf_is_a_corrupt_file(data):
    with pytest.raises(ExtractError) as e:
        extract_text("broken.pdf", data)
    assert e.value.code == "corrupt_file"
    assert e.value.message == "broken.pdf is not a readable PDF"


@pytest.mark.parametrize("name", ["x.exe", "x", "archive.tar.gz", "x.docx"])
def test_unsupported_extensions_are_refused(name):
    assert content_type_for(name) is None
    with pytest.raises(ExtractError) as e:
        extract_text(name, b"whatever")
    assert e.value.code == "unsupported_file_type"


def test_content_type_ignores_case_and_directories():
    assert content_type_for("dir.txt/Notes.PDF") == "application/pdf"
    assert content_type_for("C:\\docs\\a.Md") == "text/markdown"


def test_tokens_are_whitespace_separated_words():
    assert count_tokens("  one two\tthree\n\nfour  ") == 4
    assert count_tokens(" \n ") == 0


def test_split_cuts_every_n_words_and_keeps_the_original_spacing():
    text = "a b\nc d  e f\tg"
    result = split(text, chunk_tokens=3, max_tokens=100)
    assert [c.text for c in result.chunks] == ["a b\nc", "d  e f", "g"]
    assert [c.ordinal for c in result.chunks] == [0, 1, 2]
    assert [c.tokens for c in result.chunks] == [3, 3, 1]
    assert (result.tokens, result.limited) == (7, False)


def test_split_truncates_at_max_tokens_and_says_so():
    words = " ".join(f"w{i}" for i in range(25))
    result = split(words, chunk_tokens=10, max_tokens=15)
    assert [c.tokens for c in result.chunks] == [10, 5]
    assert result.chunks[-1].text.split()[-1] == "w14"
    assert (result.tokens, result.limited) == (15, True)


def test_split_exactly_at_the_limit_is_not_limited():
    result = split("a b c d", chunk_tokens=2, max_tokens=4)
    assert (len(result.chunks), result.tokens, result.limited) == (2, 4, False)


def test_split_with_no_budget_left_keeps_nothing():
    result = split("a b", chunk_tokens=2, max_tokens=0)
    assert (result.chunks, result.tokens, result.limited) == ([], 0, True)
    empty = split("   ", chunk_tokens=2, max_tokens=0)
    assert (empty.chunks, empty.limited) == ([], False)
