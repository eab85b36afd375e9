"""Find where a generated record came from in the document, so a reviewer can see its source.

Exact (case- and whitespace-insensitive) matches first, then the most similar line. An item
with no support in the text is kept but marked ungrounded and its confidence lowered: small
and large models alike sometimes invent.
"""

from __future__ import annotations

import difflib
import re

from sidecar.extractors.base import Grounding

_WS = re.compile(r"\s+")
FUZZY_MIN = 0.6


def _normalized(text: str) -> tuple[str, list[int]]:
    """Lower-cased text with runs of whitespace collapsed, plus a map back to offsets."""
    out: list[str] = []
    index: list[int] = []
    prev_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if prev_space:
                continue
            prev_space = True
            out.append(" ")
        else:
            prev_space = False
            out.append(ch.lower())
        index.append(i)
    return "".join(out), index


def ground(quote: str, text: str, offset: int = 0) -> Grounding:
    """Locate ``quote`` in ``text``; spans are offsets into the full document (+``offset``)."""
    q = _WS.sub(" ", quote).strip().lower()
    if not q:
        return Grounding(span=None)
    norm, index = _normalized(text)
    pos = norm.find(q)
    if pos != -1:
        start = index[pos]
        end = index[pos + len(q) - 1] + 1
        return Grounding(span=(offset + start, offset + end), exact=True, quote=text[start:end])
    best, best_ratio = None, 0.0
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.strip()
        if body:
            ratio = difflib.SequenceMatcher(None, q, body.lower(), autojunk=False).ratio()
            if ratio > best_ratio:
                lead = len(line) - len(line.lstrip())
                best, best_ratio = (pos + lead, pos + lead + len(body)), ratio
        pos += len(line)
    if best is not None and best_ratio >= FUZZY_MIN:
        return Grounding(span=(offset + best[0], offset + best[1]), exact=False,
                         quote=text[best[0]:best[1]])
    return Grounding(span=None)


def confidence_for(g: Grounding) -> float:
    """Generated items are trusted by how well the document supports them."""
    if g.span is None:
        return 0.35
    return 0.9 if g.exact else 0.7
