"""Email threads: which earlier message a reply answers, what the reply itself says, and
which of that message's tasks it is about. Pure functions.

A message's thread keys: its own ``Message-ID`` (``msg:``), its provider's thread id
(``thread:``, Gmail's threadId, Outlook's conversationId), and its subject without reply
prefixes (``subject:``, within one folder or account). A reply finds the earlier message by
its ``In-Reply-To`` and ``References`` ids, the same thread id, or (only when its subject
says ``Re:``) the same subject.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from typing import Any

#: Reply and forward prefixes (``Re:``, ``Fwd:``, ``AW:`` …) at the start of a subject.
REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|tr|wg)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_IS_REPLY = re.compile(r"^\s*(?:re|aw|sv)\s*(?:\[\d+\])?\s*:", re.I)
_MSGID = re.compile(r"<([^<>\s]+)>")
#: Where the quoted earlier message starts in a reply's body.
_QUOTE_START = re.compile(
    r"^(?:On\s.{1,200}\swrote:\s*$|El\s.{1,200}\sescribió:\s*$|Am\s.{1,200}\sschrieb.*:\s*$"
    r"|-{2,}\s*Original Message\s*-{2,}|_{10,}\s*$|From:\s.+$)", re.I | re.M)
#: Header lines a message's text may open with (before its body).
HEADERS = ("subject:", "from:", "date:", "to:", "cc:")
#: A reply's own text in a comment, at most (the seed's taskComments.content is text).
MAX_COMMENT = 4000
_WORD = re.compile(r"[^\W\d_]{3,}")
_STOP = frozenset("""the and for with that this from have will your you our are was were
    but not all can has had been they them their there then than what when who about into
    just also please thanks thank done sent send here see let know any new get got did""".split())


def normalised_subject(subject: str | None) -> str:
    """The subject without ``Re:``/``Fwd:`` prefixes, case-folded and whitespace collapsed."""
    return " ".join(REPLY_PREFIX.sub("", subject or "").casefold().split())


def message_ids(value: Any) -> list[str]:
    """``<a@b> <c@d>`` (or a list of them) → ``["a@b", "c@d"]``, lower-cased."""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    text = str(value or "")
    found = _MSGID.findall(text) or text.split()
    return [f.strip("<>").casefold() for f in found if f.strip("<>")]


def own_keys(meta: Mapping[str, Any], scope: str) -> list[str]:
    """The keys under which a message's tasks are remembered."""
    keys = [f"msg:{m}" for m in message_ids(meta.get("message_id"))[:1]]
    thread = meta.get("thread_id") or meta.get("conversation_id")
    if thread:
        keys.append(f"thread:{scope}:{thread}")
    subject = normalised_subject(meta.get("subject") or meta.get("title"))
    if subject and ("from" in meta or "message_id" in meta):
        keys.append(f"subject:{scope}:{subject}")
    return keys


def reply_keys(meta: Mapping[str, Any], scope: str) -> list[tuple[str, str]]:
    """(key, how) under which the messages a reply answers are remembered, surest first."""
    out = [(f"msg:{m}", "in_reply_to") for m in message_ids(meta.get("in_reply_to"))]
    out += [(f"msg:{m}", "references")
            for m in reversed(message_ids(meta.get("references")))]
    thread = meta.get("thread_id") or meta.get("conversation_id")
    if thread:
        out.append((f"thread:{scope}:{thread}", "thread"))
    subject = meta.get("subject") or meta.get("title") or ""
    if _IS_REPLY.match(subject) and normalised_subject(subject):
        out.append((f"subject:{scope}:{normalised_subject(subject)}", "subject"))
    return out


def reply_text(text: str) -> str:
    """The reply's own words: no header lines, nothing from where the quote starts, no
    ``>`` lines."""
    lines = text.splitlines()
    while lines and (lines[0].lower().startswith(HEADERS) or not lines[0].strip()):
        lines = lines[1:]
    body = "\n".join(lines)
    m = _QUOTE_START.search(body)
    if m:
        body = body[:m.start()]
    kept = [ln for ln in body.splitlines() if not ln.lstrip().startswith(">")]
    return "\n".join(kept).strip()[:MAX_COMMENT]


def author(meta: Mapping[str, Any]) -> str | None:
    """``"Ana Ruiz <ana@x.com>"`` → ``Ana Ruiz``; an address alone stays an address."""
    name, addr = parseaddr(str(meta.get("from") or ""))
    return (name or addr or "").strip() or None


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if w not in _STOP}


def pick_task(tasks: Sequence[tuple[str, str]], reply: str) -> tuple[str, str] | None:
    """The (call id, title) a reply is about: the only task of the thread, else the one
    sharing the most words with the reply; None when no task or two tie."""
    if len(tasks) == 1:
        return tasks[0]
    said = _words(reply)
    scored = sorted(((len(_words(title) & said), (cid, title)) for cid, title in tasks),
                    reverse=True)
    if not scored or scored[0][0] == 0 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]
