"""Readers against real files in tmp_path: text out, or the precise reason there is none."""

from __future__ import annotations

import codecs
import errno
import io
import json
import os
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import sidecar.readers as readers
from sidecar.readers import (
    SUPPORTED_EXTENSIONS,
    Document,
    SkipFile,
    html_to_text,
    read_bytes,
    read_document,
)
from tests.reliability.hostile_files import pdf_bytes

MAX = 1024 * 1024


# ---------------------------------------------------------------- helpers

def make_pdf(pages: list[str], *, title: str | None = None, encrypted: bool = False) -> bytes:
    """A minimal valid PDF (correct xref) with one Helvetica text line per page."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                    f"<< /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode())
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    trailer = ""
    if title:
        objs.append(f"<< /Title ({title}) >>".encode())
        trailer += f" /Info {len(objs)} 0 R"
    if encrypted:
        # Standard handler, RC4-40; /U does not match the empty user password, so a
        # reader must ask for one.
        o, u = "ab" * 32, "cd" * 32
        objs.append(f"<< /Filter /Standard /V 1 /R 2 /O <{o}> /U <{u}> /P -44 >>".encode())
        trailer += f" /Encrypt {len(objs)} 0 R /ID [<{'12' * 16}> <{'12' * 16}>]"
    return pdf_bytes(objs, trailer=trailer.strip())


def make_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Quarterly plan", level=1)
    d.add_paragraph("Ship the sidecar by Friday.")
    d.add_heading("Owners", level=2)
    table = d.add_table(rows=2, cols=3)
    for i, value in enumerate(("Task", "Owner", "Due")):
        table.rows[0].cells[i].text = value
    for i, value in enumerate(("Readers", "Ana", "2024-06-01")):
        table.rows[1].cells[i].text = value
    d.add_paragraph("Closing note.")
    d.save(str(path))
    return path


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def skip_reason(path: Path, max_bytes: int = MAX) -> SkipFile:
    with pytest.raises(SkipFile) as info:
        read_document(path, max_bytes=max_bytes)
    assert path.name in info.value.message
    return info.value


# ---------------------------------------------------------------- text formats

def test_supported_extensions() -> None:
    assert SUPPORTED_EXTENSIONS == frozenset({
        ".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".html", ".htm", ".pdf",
        ".docx", ".eml", ".log", ".rst"})


def test_utf8_text_and_hash(tmp_path: Path) -> None:
    import hashlib

    raw = "Buy milk\r\nCall Bob — tomorrow\n".encode()
    doc = read_document(write(tmp_path, "todo.txt", raw), max_bytes=MAX)
    assert isinstance(doc, Document)
    assert doc.kind == "txt"
    assert doc.text == "Buy milk\nCall Bob — tomorrow\n"
    assert doc.content_hash == hashlib.sha256(raw).hexdigest()
    assert doc.meta["encoding"] == "utf-8"
    assert doc.meta["date_origin"] == "mtime"  # no stated date: the file's mtime (issue 14)
    json.dumps(dict(doc.meta))


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "a.log", codecs.BOM_UTF8 + b"line one"), max_bytes=MAX)
    assert doc.text == "line one"
    assert doc.kind == "txt"


def test_cp1252_text(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", "café déjà vu".encode("cp1252"))
    doc = read_document(path, max_bytes=MAX)
    assert doc.text == "café déjà vu"
    assert doc.meta["encoding"] == "cp1252"


def test_utf16_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "win.txt", "Meeting at 10:00\nRoom 4".encode("utf-16"))
    doc = read_document(path, max_bytes=MAX)
    assert doc.text == "Meeting at 10:00\nRoom 4"
    assert doc.meta["encoding"] == "utf-16"


def test_undecodable_text_is_encoding(tmp_path: Path) -> None:
    # High bytes only: not UTF-8, undefined in cp1252, nothing the detector believes in.
    err = skip_reason(write(tmp_path, "odd.txt", bytes(range(0x80, 0x100)) * 4))
    assert err.reason == "encoding"
    assert "encoding" in err.message


def test_binary_masquerading_as_text(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "data.txt", bytes(range(256)) * 8))
    assert err.reason == "binary"
    assert "looks binary" in err.message
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)
    assert skip_reason(write(tmp_path, "pic.md", png)).reason == "binary"
    controls = b"abc\x01\x02\x03\x04\x05\x06\x07\x08" * 50
    assert skip_reason(write(tmp_path, "ctl.log", controls)).reason == "binary"


def test_markdown_title(tmp_path: Path) -> None:
    src = "```\n# not a title\n```\nintro\n\n# Project *Atlas*\n\n- [ ] write spec\n"
    doc = read_document(write(tmp_path, "atlas.markdown", src), max_bytes=MAX)
    assert doc.kind == "md"
    assert doc.title == "Project *Atlas*"
    assert doc.text == src
    assert read_document(write(tmp_path, "b.md", "no heading"), max_bytes=MAX).title is None


def test_csv_rows_use_header(tmp_path: Path) -> None:
    src = "task,owner,due\nWrite spec,Ana,2024-06-01\nReview,\"Bob, Jr.\",\n\n"
    doc = read_document(write(tmp_path, "tasks.csv", src), max_bytes=MAX)
    assert doc.kind == "csv"
    assert doc.text.splitlines() == [
        "| task | owner | due |",
        "|---|---|---|",
        "| Write spec | Ana | 2024-06-01 |",
        "| Review | Bob, Jr. |  |",
    ]


def test_semicolon_csv_and_tsv(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "eu.csv", "name;city\nJosé;Lisboa\n"), max_bytes=MAX)
    assert doc.text == "| name | city |\n|---|---|\n| José | Lisboa |"
    doc = read_document(write(tmp_path, "t.tsv", "a\tb\n1\t2\n"), max_bytes=MAX)
    assert doc.kind == "csv"
    assert doc.text == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_json_flattened(tmp_path: Path) -> None:
    data = {"project": {"name": "Atlas", "tags": ["a", "b"], "done": False, "lead": None},
            "count": 3}
    doc = read_document(write(tmp_path, "p.json", json.dumps(data)), max_bytes=MAX)
    assert doc.kind == "json"
    assert doc.text.splitlines() == [
        "project.name: Atlas", "project.tags[0]: a", "project.tags[1]: b",
        "project.done: false", "project.lead: null", "count: 3",
    ]
    assert "json_invalid" not in doc.meta


def test_invalid_json_is_kept_as_text(tmp_path: Path) -> None:
    src = '{"todo": "call the bank", oops'
    doc = read_document(write(tmp_path, "broken.json", src), max_bytes=MAX)
    assert doc.kind == "json"
    assert doc.text == src
    assert doc.meta["json_invalid"] is True


def test_html_strips_scripts_styles_comments(tmp_path: Path) -> None:
    src = """<!doctype html><html><head><title> Team  page </title>
    <style>body { color: red }</style><script>var secret = "x";</script></head>
    <body><!-- hidden comment --><h1>Welcome</h1><p>Fish &amp; chips&nbsp;at&#32;noon</p>
    <ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>
    <script type="text/javascript">alert(1)</script><p>end<br>line</p></body></html>"""
    doc = read_document(write(tmp_path, "team.htm", src), max_bytes=MAX)
    assert doc.kind == "html"
    assert doc.title == "Team page"
    for gone in ("secret", "color", "hidden comment", "alert", "Team  page"):
        assert gone not in doc.text
    assert doc.text == ("Welcome\n\nFish & chips at noon\n\n- one\n- two\n\na | b\n\n"
                        "end\nline")


def test_html_to_text_for_email_bodies() -> None:
    assert html_to_text("<div>Hi<br/>there</div><p>Bye</p>") == "Hi\nthere\n\nBye"
    assert html_to_text("<pre>a\n  b</pre>") == "a\n  b"
    assert html_to_text("") == ""


# ---------------------------------------------------------------- pdf

def test_pdf_text_pages_and_title(tmp_path: Path) -> None:
    path = write(tmp_path, "report.pdf", make_pdf(["Hello world", "Second page"], title="Q3"))
    doc = read_document(path, max_bytes=MAX)
    assert doc.kind == "pdf"
    assert doc.text == "Hello world\n\nSecond page"
    assert doc.meta["pages"] == 2
    assert doc.title == "Q3"


def test_txt_that_is_really_a_pdf(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "download.txt", make_pdf(["Invoice 42"])),
                        max_bytes=MAX)
    assert doc.kind == "pdf"
    assert doc.text == "Invoice 42"


def test_pdf_without_text_layer_is_empty(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "scan.pdf", make_pdf([""])))
    assert err.reason == "empty"
    assert "no text layer" in err.message


def test_broken_pdf_is_corrupt(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "broken.pdf", b"%PDF-1.4 garbage"))
    assert err.reason == "corrupt"
    err = skip_reason(write(tmp_path, "fake.pdf", b"just some text"))
    assert err.reason == "corrupt"


def test_encrypted_pdf(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "secret.pdf", make_pdf(["top secret"], encrypted=True)))
    assert err.reason == "encrypted"
    assert err.message == "secret.pdf: password-protected PDF"


def test_qpdf_encrypted_pdf(tmp_path: Path) -> None:
    qpdf = shutil.which("qpdf")
    if qpdf is None:
        pytest.skip("qpdf is not installed; test_encrypted_pdf covers a hand-built one")
    plain = write(tmp_path, "plain.pdf", make_pdf(["top secret"]))
    locked = tmp_path / "locked.pdf"
    subprocess.run([qpdf, "--encrypt", "user", "owner", "256", "--", str(plain), str(locked)],
                   check=True)
    assert skip_reason(locked).reason == "encrypted"


# ---------------------------------------------------------------- docx

def test_docx_paragraphs_headings_tables(tmp_path: Path) -> None:
    doc = read_document(make_docx(tmp_path / "plan.docx"), max_bytes=MAX)
    assert doc.kind == "docx"
    assert doc.text.splitlines() == [
        "Quarterly plan", "Ship the sidecar by Friday.", "Owners",
        "Task | Owner | Due", "Readers | Ana | 2024-06-01", "Closing note.",
    ]
    assert doc.title == "Quarterly plan"
    assert doc.meta["tables"] == 1


def test_docx_core_title_wins(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "Official title"
    d.add_heading("Body heading", level=1)
    d.save(str(tmp_path / "t.docx"))
    assert read_document(tmp_path / "t.docx", max_bytes=MAX).title == "Official title"


def test_docx_bytes_under_another_extension(tmp_path: Path) -> None:
    data = make_docx(tmp_path / "plan.docx").read_bytes()
    doc = read_document(write(tmp_path, "plan.txt", data), max_bytes=MAX)
    assert doc.kind == "docx"


def test_broken_docx_is_corrupt(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "garbage.docx", b"PK\x03\x04" + os.urandom(200)))
    assert err.reason == "corrupt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "not word")
    err = skip_reason(write(tmp_path, "other.docx", buf.getvalue()))
    assert err.reason == "corrupt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<broken")
        zf.writestr("word/document.xml", "<also broken")
    assert skip_reason(write(tmp_path, "xml.docx", buf.getvalue())).reason == "corrupt"


def test_encrypted_docx(tmp_path: Path) -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100
    err = skip_reason(write(tmp_path, "locked.docx", ole + "EncryptedPackage".encode("utf-16-le")))
    assert err.reason == "encrypted"
    assert skip_reason(write(tmp_path, "old.docx", ole)).reason == "unsupported"


# ---------------------------------------------------------------- eml

def _email(**parts: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = "Budget review"
    msg["From"] = "Ana <ana@example.com>"
    msg["To"] = "bob@example.com"
    msg["Date"] = "Tue, 04 Jun 2024 09:30:00 +0200"
    if "plain" in parts:
        msg.set_content(parts["plain"])
        if "html" in parts:
            msg.add_alternative(parts["html"], subtype="html")
    else:
        msg.set_content(parts["html"], subtype="html")
    return msg


def test_eml_multipart_prefers_plain(tmp_path: Path) -> None:
    msg = _email(plain="Please send the numbers by Friday.\n", html="<p>HTML version</p>")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf",
                       filename="budget.pdf")
    doc = read_document(write(tmp_path, "m.eml", msg.as_bytes()), max_bytes=MAX)
    assert doc.kind == "eml"
    assert doc.title == "Budget review"
    assert doc.text == ("Subject: Budget review\nFrom: Ana <ana@example.com>\n"
                        "Date: Tue, 04 Jun 2024 09:30:00 +0200\n\n"
                        "Please send the numbers by Friday.")
    assert doc.date == datetime(2024, 6, 4, 9, 30, tzinfo=UTC) - timedelta(hours=2)
    assert doc.date is not None and doc.date.tzinfo is not None
    assert doc.meta["from"] == "Ana <ana@example.com>"
    assert doc.meta["to"] == "bob@example.com"
    assert doc.meta["attachments"] == ["budget.pdf"]
    json.dumps(dict(doc.meta))


def test_eml_html_only(tmp_path: Path) -> None:
    msg = _email(html="<html><body><script>x()</script><p>Call &amp; confirm</p></body></html>")
    doc = read_document(write(tmp_path, "h.eml", msg.as_bytes()), max_bytes=MAX)
    assert doc.text.endswith("\n\nCall & confirm")
    assert "x()" not in doc.text
    assert doc.meta["attachments"] == []


def test_eml_attachment_bytes_via_read_bytes() -> None:
    doc = read_bytes(make_pdf(["Attached invoice"]), name="invoice.PDF", max_bytes=MAX)
    assert doc.kind == "pdf"
    assert doc.text == "Attached invoice"
    with pytest.raises(SkipFile) as info:
        read_bytes(b"x" * 20, name="big.txt", max_bytes=10)
    assert info.value.reason == "too_large"
    with pytest.raises(SkipFile) as info:
        read_bytes(b"MZ\x90\x00", name="setup.exe", max_bytes=MAX)
    assert info.value.reason == "unsupported"


# ---------------------------------------------------------------- file-level refusals

def test_empty_file(tmp_path: Path) -> None:
    assert skip_reason(write(tmp_path, "empty.md", b"")).reason == "empty"
    assert skip_reason(write(tmp_path, "blank.txt", b"  \n\n\t")).reason == "empty"


def test_oversize_file(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "huge.txt", b"a" * 2048), max_bytes=1024)
    assert err.reason == "too_large"


def test_unsupported_extension(tmp_path: Path) -> None:
    err = skip_reason(write(tmp_path, "movie.mp4", b"\x00\x00\x00\x18ftypmp42"))
    assert err.reason == "unsupported"
    assert skip_reason(write(tmp_path, "README", b"hello")).reason == "unsupported"


def test_missing_file_is_vanished(tmp_path: Path) -> None:
    assert skip_reason(tmp_path / "gone.txt").reason == "vanished"


@pytest.mark.parametrize(("err", "reason", "words"), [
    (errno.EACCES, "permission", "permission denied"),  # chmod 000 (root reads it anyway)
    (errno.EPERM, "permission", "permission denied"),  # a macOS privacy prompt said no
    (errno.EMFILE, "unreadable", "Too many open files"),  # the process's file limit used up
    (errno.EIO, "unreadable", "Input/output error"),  # a failing disk or network share
])
def test_a_failed_open_is_a_skip_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 err: int, reason: str, words: str) -> None:
    path = write(tmp_path, "private.txt", "- [ ] Call Dana about the invoice\n")
    assert read_document(path, max_bytes=MAX).text.startswith("- [ ] Call Dana")  # precondition
    real_open, refused = os.open, []

    def failing_open(name: object, *args: object, **kwargs: object) -> int:
        if os.fspath(name) == os.fspath(path):  # type: ignore[arg-type]
            refused.append(name)
            raise OSError(err, os.strerror(err), os.fspath(path))  # type: ignore[arg-type]
        return real_open(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    skip = skip_reason(path)
    assert refused, "the reader never opened the file through os.open"
    assert skip.reason == reason and words in skip.message, skip


def test_locked_file_is_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(f: BinaryIO, limit: int) -> bytes:  # Windows: another process holds a lock
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(readers, "_read", locked)
    assert skip_reason(write(tmp_path, "locked.txt", "x")).reason == "permission"


def test_file_growing_while_read_is_truncated(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "live.log", "first line\n")

    def read_then_append(f: BinaryIO, limit: int) -> bytes:
        data = f.read(limit)
        with path.open("ab") as out:
            out.write(b"second line\n")
        return data

    monkeypatch.setattr(readers, "_read", read_then_append)
    assert skip_reason(path).reason == "truncated"


def test_file_deleted_while_read_is_vanished(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "temp.txt", "soon gone")

    def read_then_delete(f: BinaryIO, limit: int) -> bytes:
        data = f.read(limit)
        path.unlink()
        return data

    monkeypatch.setattr(readers, "_read", read_then_delete)
    assert skip_reason(path).reason == "vanished"


def test_directory_is_not_a_document(tmp_path: Path) -> None:
    (tmp_path / "folder.txt").mkdir()
    assert skip_reason(tmp_path / "folder.txt").reason == "unsupported"


def test_the_size_limit_is_inclusive_and_the_message_gives_both_sizes(tmp_path: Path) -> None:
    line = b"- [ ] Call Dana about the invoice\n"
    exact = write(tmp_path, "exact.txt", line * 30 + b"x" * (1024 - 30 * len(line)))
    assert exact.stat().st_size == 1024
    assert read_document(exact, max_bytes=1024).text.startswith("- [ ] Call Dana")
    over = skip_reason(exact, max_bytes=1023)
    assert over.reason == "too_large"
    assert over.message == "exact.txt: 1.0 KB is over the 1023 bytes limit"
    big = write(tmp_path, "big.txt", b"a" * (3 * 1024 * 1024 + 1))
    assert skip_reason(big, max_bytes=2 * 1024 * 1024).message == (
        "big.txt: 3.0 MB is over the 2.0 MB limit")
    assert readers.read_bytes(line, name="mail/notes.txt", max_bytes=40).text.startswith("- [ ]")
    with pytest.raises(SkipFile) as info:
        readers.read_bytes(line, name="mail/notes.txt", max_bytes=10)
    assert info.value.message == "notes.txt: 34 bytes is over the 10 bytes limit"


def test_messages_say_what_happened_when(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert skip_reason(tmp_path / "gone.txt").message == (
        "gone.txt: deleted before it could be read")
    assert skip_reason(write(tmp_path, "README", b"hello")).message == (
        "README: files without an extension are not supported")
    assert skip_reason(write(tmp_path, "clip.mp4", b"x")).message == (
        "clip.mp4: .mp4 files are not supported")
    path = write(tmp_path, "live.log", "first line\n")

    def read_then_grow(f: BinaryIO, limit: int) -> bytes:
        return f.read(limit) + b"x" * limit  # more than the limit arrived meanwhile

    monkeypatch.setattr(readers, "_read", read_then_grow)
    grew = skip_reason(path, max_bytes=2048)
    assert (grew.reason, grew.message) == (
        "too_large", "live.log: grew over the 2.0 KB limit while being read")

    def read_then_delete(f: BinaryIO, limit: int) -> bytes:
        data = f.read(limit)
        path.unlink()
        return data

    monkeypatch.setattr(readers, "_read", read_then_delete)
    assert skip_reason(path).message == "live.log: deleted while it was being read"


@pytest.mark.parametrize(("size", "limit", "said"), [
    (100 * 1024, 100 * 1024 - 1, "100.0 KB is over the 100.0 KB limit"),
    (1024 * 1024, 1024 * 1024 - 1, "1.0 MB is over the 1024.0 KB limit"),
    (100 * 1024 * 1024, 99 * 1024 * 1024, "100.0 MB is over the 99.0 MB limit"),
    (1024, 1023, "1.0 KB is over the 1023 bytes limit"),
])
def test_sizes_in_messages_are_binary_units(tmp_path: Path, size: int, limit: int,
                                            said: str) -> None:
    path = tmp_path / "big.txt"
    with path.open("wb") as f:  # sparse: the size is what counts, nothing is read
        f.truncate(size)
    assert skip_reason(path, max_bytes=limit).message == f"big.txt: {said}"


def test_empty_attachment_and_odd_open_failures(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SkipFile) as info:
        readers.read_bytes(b"", name="inbox/notes.txt", max_bytes=MAX)
    assert (info.value.reason, info.value.message) == ("empty", "notes.txt: empty file (0 bytes)")
    path = write(tmp_path, "swapped.txt", "- [ ] Call Dana\n")
    real_open = os.open

    def swapped(err: OSError) -> Any:
        def fake(name: object, *args: object, **kwargs: object) -> int:
            if os.fspath(name) == os.fspath(path):  # type: ignore[arg-type]
                raise err
            return real_open(name, *args, **kwargs)  # type: ignore[arg-type]
        return fake

    monkeypatch.setattr(os, "open", swapped(IsADirectoryError(errno.EISDIR, "Is a directory")))
    skip = skip_reason(path)
    assert (skip.reason, skip.message) == ("unsupported", "swapped.txt: is a folder, not a file")
    monkeypatch.setattr(os, "open", swapped(OSError(errno.ENOENT, "No such file")))
    skip = skip_reason(path)
    assert (skip.reason, skip.message) == ("vanished",
                                           "swapped.txt: deleted before it could be read")
    monkeypatch.setattr(os, "open", swapped(OSError(errno.ELOOP, "Too many levels")))
    skip = skip_reason(path)
    assert (skip.reason, skip.message) == ("unreadable",
                                           "swapped.txt: could not be read (Too many levels)")
