"""Builders for hostile files: zips that lie about their sizes, PDFs with absurd page trees.

Everything is written by hand (a raw zip writer, a raw PDF writer) because the honest
libraries refuse to produce what an attacker can: a size in the central directory that does
not match the data, a compression method Word never uses, a page object shared 100,000 times.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import stat
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GiB = 1024 ** 3
STORED, DEFLATED, BZIP2 = 0, 8, 12

#: ``bz2.compress(bytes(GiB), 9)``: 1 GiB of zeros in 785 bytes (compressing it takes ~10 s,
#: so it is kept here; the reader must refuse it without ever inflating it).
BZ2_GIB_OF_ZEROS = base64.b64decode("""
QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakK
gJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCX
MUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFB
WSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkm
U1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZ
Dgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J
4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLf
AV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFf
jkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45A
AMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADA
AAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAA
CCAAMIBNRkKgJakKgJcxQVkmU1lIfF/JAIpSyADAAAAEAAggADDMBSmmkSJDYUSJDxdyRThQkPaI5AI=""")

CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    b'officedocument.wordprocessingml.document.main+xml"/></Types>')
RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def document_xml(body: str, *, prolog: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
            f'<w:document xmlns:w="{_W}"><w:body>{body}</w:body></w:document>').encode()


def paragraph(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


@dataclass(frozen=True, slots=True)
class Entry:
    """One zip member as it is written: ``raw`` is already compressed with ``method``."""

    name: str
    raw: bytes
    method: int
    size: int
    crc: int

    @classmethod
    def deflated(cls, name: str, data: bytes) -> Entry:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return cls(name, c.compress(data) + c.flush(), DEFLATED, len(data), zlib.crc32(data))

    @classmethod
    def stored(cls, name: str, data: bytes) -> Entry:
        return cls(name, data, STORED, len(data), zlib.crc32(data))


def zip_bytes(entries: list[Entry]) -> bytes:
    """A zip archive written field by field, trusting every size and method it is given."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        name = e.name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, e.method, 0, 0x21, e.crc,
                           len(e.raw), e.size, len(name), 0) + name + e.raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, e.method, 0, 0x21,
                               e.crc, len(e.raw), e.size, len(name), 0, 0, 0, 0, 0,
                               offset) + name
    n = min(len(entries), 0xFFFF)
    return bytes(out + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n,
                                             len(central), len(out), 0))


_UNIT = 8 * 1024 * 1024


@cache
def _zero_chunk() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(bytes(_UNIT)) + c.flush(zlib.Z_FULL_FLUSH)


def deflate_zeros(n_bytes: int) -> bytes:
    """A raw deflate stream of ``n_bytes`` zero bytes (a multiple of 8 MiB), about 1/1000 of
    it: one full-flushed 8 MiB chunk repeated (a full flush resets the window), then an
    empty final block."""
    assert n_bytes % _UNIT == 0
    return _zero_chunk() * (n_bytes // _UNIT) + b"\x03\x00"


def docx(document: bytes | Entry, *extra: Entry) -> bytes:
    """A minimal .docx python-docx opens: content types, package rels, document.xml."""
    doc = document if isinstance(document, Entry) else Entry.deflated("word/document.xml",
                                                                      document)
    return zip_bytes([Entry.deflated("[Content_Types].xml", CONTENT_TYPES),
                      Entry.deflated("_rels/.rels", RELS), doc, *extra])


def docx_honest_bomb(n_bytes: int = 2 * GiB) -> bytes:
    """document.xml says it is 2 GiB, and it is (CRC left 0: the size alone must stop it)."""
    return docx(Entry("word/document.xml", deflate_zeros(n_bytes), DEFLATED, n_bytes, 0))


def docx_lying_bomb(n_bytes: int = GiB) -> bytes:
    """document.xml claims 4 KiB in the central directory but inflates to ``n_bytes``."""
    return docx(Entry("word/document.xml", deflate_zeros(n_bytes), DEFLATED, 4096, 0))


def docx_bzip2_bomb() -> bytes:
    """document.xml in bzip2 (which zipfile inflates in one unbounded call), claiming 4 KiB."""
    return docx(Entry("word/document.xml", BZ2_GIB_OF_ZEROS, BZIP2, 4096, 0))


def docx_many_entries(n: int = 70_000) -> bytes:
    """A readable document plus ``n`` empty members (more than a plain zip directory counts)."""
    junk = [Entry.stored(f"word/media/{i:06}", b"") for i in range(n)]
    return docx(document_xml(paragraph("Send the many-entries report")), *junk)


def docx_deep_nesting(depth: int = 100_000) -> bytes:
    """document.xml nested ``depth`` elements deep (a recursive parser would overflow)."""
    return docx(document_xml("<w:p>" * depth + "</w:p>" * depth))


def docx_billion_laughs() -> bytes:
    """Entities that expand to 10^9 copies of "lol" if a parser resolves them."""
    ents = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    prolog = f"<!DOCTYPE w:document [{ents}]>"
    return docx(document_xml(paragraph("&l9;"), prolog=prolog))


# -------------------------------------------------------------------------------- PDF


def pdf_bytes(objects: list[bytes], *, trailer: str = "", prev_loop: bool = False) -> bytes:
    """A PDF with a correct xref; ``trailer`` adds entries (``/Info 5 0 R``); ``prev_loop``
    makes the trailer's /Prev point at itself."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    extra = (f" {trailer}" if trailer else "").encode()
    prev = b" /Prev %d" % xref if prev_loop else b""
    out += (b"trailer\n<< /Root 1 0 R /Size %d%s%s >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, extra, prev, xref))
    return bytes(out)


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page(contents: int) -> bytes:
    return (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
            b"<< /Font << /F1 5 0 R >> >> /Contents %d 0 R >>" % contents)


def _text(line: str) -> bytes:
    return f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET".encode()


def pdf_text(line: str, *, prev_loop: bool = False) -> bytes:
    """One page with one line of text."""
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", _page(4),
                      _stream(_text(line)), _FONT], prev_loop=prev_loop)


def pdf_many_pages(n: int = 100_000) -> bytes:
    """``n`` pages that are all the same page object: 600 KB that claims a library."""
    kids = b" ".join([b"3 0 R"] * n)
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, n), _page(4),
                      _stream(_text("Page of the endless report")), _FONT])


def pdf_tree_loop() -> bytes:
    """A page tree whose only child is itself, through an intermediate node."""
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                      b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
                      _stream(_text("never reached")), _FONT])


def pdf_flate_bomb(n_bytes: int = GiB) -> bytes:
    """One page whose content stream inflates to ``n_bytes`` of zeros."""
    raw = b"\x78\xda" + deflate_zeros(n_bytes)  # zlib header; no Adler-32 (a reader may check)
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", _page(4),
                      _stream(raw, b" /Filter /FlateDecode"), _FONT])


def pdf_shared_stream(*, pages: int, n_bytes: int) -> bytes:
    """``pages`` pages that all draw one content stream of ``n_bytes`` zeros."""
    raw = b"\x78\xda" + deflate_zeros(n_bytes)
    kids = b" ".join([b"3 0 R"] * pages)
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages), _page(4),
                      _stream(raw, b" /Filter /FlateDecode"), _FONT])


# -------------------------------------------------------------------------- the catalog


@dataclass(frozen=True, slots=True)
class Case:
    """A catalog entry: ``match`` finds its run-log line; no ``reasons``: it must be read."""

    match: str
    reasons: tuple[str, ...] = ()


NEWLINE_NAME = "two\nlines.md"
NEWLINE_TASK = "Call the printer about the newline invoice"
GOOD_EMAIL = """From: Dana <dana@bakery.example>
To: Priya <priya@studio.example>
Subject: Opening hours
Date: Tue, 24 Nov 2026 16:42:10 +0100
Content-Type: text/plain; charset="utf-8"

Hi Priya,
- [ ] Fix the opening hours on the contact page
Thanks, Dana
"""


def write_good(folder: Path) -> set[str]:
    """Four good documents, one per reader family; returns the task titles they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a-meeting.md").write_text("# Kickoff\n- [ ] Send the homepage mockups to Dana\n")
    (folder / "good-email.eml").write_text(GOOD_EMAIL)
    (folder / "good-report.docx").write_bytes(
        docx(document_xml(paragraph("- [ ] Send the Word report to Ana"))))
    (folder / "good-plan.pdf").write_bytes(pdf_text("- [ ] Review the PDF plan with Luis"))
    return {"Send the homepage mockups to Dana", "Fix the opening hours on the contact page",
            "Send the Word report to Ana", "Review the PDF plan with Luis"}


def build_catalog(folder: Path) -> tuple[list[Case], set[str]]:
    """Write the good documents and every hostile file; (the cases, the task titles due)."""
    titles = write_good(folder)
    f = folder
    cases: list[Case] = []

    def add(name: str, data: bytes, *reasons: str) -> None:
        (f / name).write_bytes(data)
        cases.append(Case(f"{name}: ", reasons))

    add("bomb-honest.docx", docx_honest_bomb(), "too_large")
    add("bomb-lying.docx", docx_lying_bomb(), "corrupt")
    add("bomb-bzip2.docx", docx_bzip2_bomb(), "unsupported")
    add("many-entries.docx", docx_many_entries(), "too_large")
    add("deep-nesting.docx", docx_deep_nesting(), "corrupt")
    add("billion-laughs.docx", docx_billion_laughs(), "corrupt")
    add("pdf-100k-pages.pdf", pdf_many_pages(), "too_large")
    add("pdf-tree-loop.pdf", pdf_tree_loop(), "corrupt")
    add("pdf-flate-bomb.pdf", pdf_flate_bomb(), "too_large")
    add("binary.txt", bytes(range(256)) * 64, "binary")
    add("pdf-xref-loop.pdf", pdf_text("- [ ] Check the xref loop invoice", prev_loop=True))
    titles.add("Check the xref loop invoice")
    (f / NEWLINE_NAME).write_text(f"- [ ] {NEWLINE_TASK}\n")
    cases.append(Case(NEWLINE_NAME))
    titles.add(NEWLINE_TASK)
    with (f / "sparse-2gb.txt").open("wb") as out:
        out.truncate(2 * GiB)
    cases.append(Case("sparse-2gb.txt: ", ("too_large",)))

    os.mkfifo(f / "fifo.md")
    cases.append(Case("fifo.md: ", ("not_regular_file",)))
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(f / "socket.md"))
        sock.close()  # the socket file stays
        cases.append(Case("socket.md: ", ("not_regular_file",)))
    except OSError:
        pass  # path too long for AF_UNIX here
    try:  # a /dev/null inside the folder (needs CAP_MKNOD)
        os.mknod(f / "devnull.md", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        cases.append(Case("devnull.md: ", ("not_regular_file",)))
    except OSError:
        pass
    for name, target in [("zero.txt", "/dev/zero"), ("urandom.md", "/dev/urandom"),
                         ("loop-a.md", "loop-b.md"), ("loop-b.md", "loop-a.md"),
                         ("self-loop.md", "self-loop.md")]:
        os.symlink(target, f / name)
        cases.append(Case(f"{name}: ", ("outside_folder",) if target.startswith("/dev")
                          else ("symlink_loop",)))
    (f / "loopdir").mkdir()
    os.symlink("../loopdir", f / "loopdir" / "again")
    cases.append(Case("loopdir: folder reached twice", ("symlink_loop",)))

    raw = os.fsencode(f)
    with open(raw + b"/caf\xe9-latin1.md", "wb") as out:
        out.write(b"- [ ] never read: the name is Latin-1\n")
    cases.append(Case("caf\\xe9-latin1.md: ", ("bad_name",)))
    os.mkdir(raw + b"/bad-\xff-dir")
    with open(raw + b"/bad-\xff-dir/inside.md", "wb") as out:
        out.write(b"- [ ] never read: its folder's name is not UTF-8\n")
    cases.append(Case("bad-\\xff-dir: ", ("bad_name",)))
    if os.geteuid() != 0:  # root reads through chmod 000 (test_readers covers the reason)
        add("unreadable.md", b"- [ ] never read\n", "permission")
        (f / "unreadable.md").chmod(0)

    # swapped by swap_mid_run after the scan saw them as they are now
    add("zz-deleted.md", b"- [ ] never read: deleted mid-run\n", "vanished")
    add("zz-file-then-dir.md", b"- [ ] never read: a folder by then\n", "unsupported")
    add("zz-fifo-swap.md", b"- [ ] never read: a FIFO by then\n", "unsupported")
    (f / "zz-dir-then-file").mkdir()
    add("zz-dir-then-file/zz-inner.md", b"- [ ] never read: its folder is a file\n",
        "vanished")
    add("zz-growing.txt", b"a line of the live log\n" * (16 * 1024 * 1024 // 23),
        "truncated", "too_large")
    return cases, titles


def swap_mid_run(folder: Path) -> None:
    """After the scan, before the reads: delete, and swap files, folders and FIFOs."""
    (folder / "zz-deleted.md").unlink()
    (folder / "zz-file-then-dir.md").unlink()
    (folder / "zz-file-then-dir.md").mkdir()
    shutil.rmtree(folder / "zz-dir-then-file")
    (folder / "zz-dir-then-file").write_text("now a file")
    (folder / "zz-fifo-swap.md").unlink()
    os.mkfifo(folder / "zz-fifo-swap.md")
