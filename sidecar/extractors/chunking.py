"""Split long documents into overlapping chunks at paragraph and line boundaries, never truncate.

The seed cut every document at 8,000 characters; here a document of any length is covered by
chunks that fit the model's context, each remembering its offset so items can be grounded
back to the full text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    start: int
    text: str

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def _cut_point(text: str, lo: int, hi: int) -> int:
    """The best boundary in (lo, hi]: paragraph, then line, then sentence, then space."""
    for sep in ("\n\n", "\n", ". ", " "):
        pos = text.rfind(sep, lo, hi)
        if pos > lo:
            return pos + len(sep)
    return hi


def chunk_text(text: str, max_chars: int, overlap_chars: int = 200) -> list[Chunk]:
    """Chunks of at most ``max_chars`` covering ``text``; neighbours overlap by ~``overlap``."""
    if max_chars <= 0:
        raise ValueError("max_chars must be positive")
    overlap_chars = max(0, min(overlap_chars, max_chars // 4))
    if len(text) <= max_chars:
        return [Chunk(0, 0, text)] if text else []
    chunks: list[Chunk] = []
    start = 0
    while start < len(text):
        hi = min(len(text), start + max_chars)
        end = hi if hi == len(text) else _cut_point(text, start + max_chars // 2, hi)
        chunks.append(Chunk(len(chunks), start, text[start:end]))
        if end >= len(text):
            break
        nxt = end - overlap_chars
        if overlap_chars:
            line = text.find("\n", nxt, end)
            nxt = line + 1 if line != -1 else nxt
        start = max(nxt, start + 1)
    return chunks
