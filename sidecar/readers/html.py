"""HTML to readable text with the stdlib parser: for .html files and for email bodies."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from sidecar.readers.base import Document, require_text, sha256_hex
from sidecar.readers.text import decode

#: Elements whose content is never text for a reader.
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "math", "object",
                   "iframe", "canvas", "select"})
#: Elements that stand apart as paragraphs (a blank line around them).
_PARAGRAPH = frozenset({
    "address", "article", "aside", "blockquote", "details", "dl", "fieldset", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol",
    "p", "pre", "section", "table", "ul",
})
#: Elements that start and end a line.
_LINE = frozenset({"body", "caption", "dd", "div", "dt", "figcaption", "html", "li", "summary",
                   "tbody", "tfoot", "thead", "tr"})
#: Markers in the raw output: line break, paragraph break, protected newline and space (pre).
_NL, _PARA, _PRE_NL, _PRE_SP = "\x01", "\x02", "\x03", "\x04"
_MARKERS = str.maketrans("", "", "\x00\x01\x02\x03\x04")
_BREAKS = re.compile(r"[ \x01\x02]*[\x01\x02][ \x01\x02]*")
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed",
                   "source", "track", "wbr"})
_SPACES = re.compile(r"[ \t\f\v\r\n\u00a0\u200b]+")
_BLANKS = re.compile(r"\n{3,}")


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.title_parts: list[str] = []
        self._skip: list[str] = []
        self._in_title = False
        self._pre = 0
        self._cells = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        if self._skip:
            if tag in _SKIP and tag not in _VOID:
                self._skip.append(tag)
            return
        if tag in _SKIP:
            self._skip.append(tag)
        elif tag == "br":
            self.chunks.append("\n")
        elif tag == "hr":
            self.chunks.append(_PARA)
        elif tag in ("td", "th"):
            if self._cells:
                self.chunks.append(" | ")
            self._cells += 1
        elif tag in _PARAGRAPH or tag in _LINE:
            self.chunks.append(_PARA if tag in _PARAGRAPH else _NL)
            if tag == "tr":
                self._cells = 0
            elif tag == "li":
                self.chunks.append("- ")
            elif tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            elif tag in self._skip:
                del self._skip[self._skip.index(tag):]
            return
        if tag in _PARAGRAPH or tag in _LINE:
            self.chunks.append(_PARA if tag in _PARAGRAPH else _NL)
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._skip and tag in ("br", "hr"):
            self.chunks.append("\n" if tag == "br" else _PARA)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        if self._pre:
            self.chunks.append(data.replace("\n", _PRE_NL).replace(" ", _PRE_SP))
        else:
            self.chunks.append(_SPACES.sub(" ", data))


def _parse(html: str) -> _TextParser:
    parser = _TextParser()
    try:
        parser.feed(html.translate(_MARKERS))
        parser.close()
    except Exception:  # html.parser is lenient; anything left is a parser bug, keep what we have
        pass
    return parser


def _tidy(raw: str) -> str:
    raw = _BREAKS.sub(lambda m: "\n\n" if _PARA in m.group() else "\n", raw)
    text = "\n".join(line.strip(" ") for line in raw.split("\n"))
    text = _BLANKS.sub("\n\n", text).strip()
    return text.replace(_PRE_NL, "\n").replace(_PRE_SP, " ")


def html_to_text(html: str) -> str:
    """Readable text from HTML: no scripts, styles or comments; blocks on their own lines."""
    return _tidy("".join(_parse(html).chunks))


def read_html(data: bytes, name: str) -> Document:
    source, encoding = decode(data, name)
    parser = _parse(source)
    text = _tidy("".join(parser.chunks))
    title = _SPACES.sub(" ", "".join(parser.title_parts)).strip() or None
    return Document(text=require_text(text, name), content_hash=sha256_hex(data), kind="html",
                    title=title, meta={"encoding": encoding})
