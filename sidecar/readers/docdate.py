"""The document's own date: what its "tomorrow" and "by Friday" mean, and where it came from.

In this order (the first that gives a date wins; ``origin`` names it):

* ``email``: an email's ``Date`` header (set by the .eml reader, not here);
* ``front_matter``: ``date:`` in a leading ``---`` YAML block;
* ``date_line``: a "Date:" / "Fecha:" / "Datum:" line near the top;
* ``last_message``: a chat export or log with dated messages or day headings ("03/04/2026,
  18:22 - Ana: …", "--- Friday 17 April ---"): its last one, when it was written up to;
* ``title``: a full date in the title or the lines right under it ("Kickoff — 2026-03-10",
  "Reunión del 2 de abril de 2026", "Thu 24 April 2025, 10:30"); a range ("16–27 June") is
  a period, not the document's date;
* ``file_name``: ``2026-03-10-notes.md``, ``notes-2026-04-02.md``, ``20260310.txt``;
* ``mtime``: when the file was last saved; ``now`` when nothing else is known.

A day and month without a year resolve against the fallback (mtime or now) and never to a
date after it: a document is not written after it was saved.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from sidecar.extractors.dates import (
    MONTH_PATTERN,
    find_date_expressions,
    is_day_span,
    numeric_dates,
    resolve_date,
)

ORIGINS = ("email", "front_matter", "date_line", "last_message", "title", "file_name", "mtime",
           "now")
#: The time of day given to a date-only reference (start of a working day, local).
REFERENCE_HOUR = 9

_HEAD_CHARS = 3000
#: A document may be dated ahead of when it was saved (a plan for next month), not years.
_AHEAD = timedelta(days=366)
#: How much of a chat export is searched for its last dated message.
_CHAT_CHARS = 2_000_000
_HEAD_LINES = 40
_TITLE_LINES = 4
_FRONT = re.compile(r"\A---[ \t]*\n(?P<body>.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_DATE = re.compile(r"^(?:date|created|created_at|published)[ \t]*:[ \t]*['\"]?"
                         r"(?P<v>[^'\"\n]+)", re.M | re.I)
_DATE_LINE = re.compile(
    r"^[ \t>*_#-]*(?:(?:meeting|order|invoice|issue|document|report|call|session)\s+)?"
    r"(?:date|fecha|fecha de la reuni[óo]n|datum|data|when)"
    r"[ \t*_]*:[ \t*_]*(?P<v>.+)$", re.I)
#: Kinds of date expression that name a day on their own (not "Friday" or "tomorrow").
_FULL = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{4}/\d{1,2}/\d{1,2}"
    r"|[A-Za-zé]{3,}\.?\s+\d{1,2}|\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+|de\s+)?[A-Za-z]{3,}")
_RANGE_BEFORE = re.compile(
    r"(?:\b\d{1,2}(?:st|nd|rd|th)?|\b" + MONTH_PATTERN + r"\.?)\s*[–-]\s*$", re.I)
#: "released from 3 October", "due 5 May": a date the document talks about, not its own.
_TALKS_ABOUT = re.compile(r"\b(?:from|until|till|by|before|after|due|starting|deadline|since"
                          r"|through|to|desde|hasta|antes|para)\s*:?\s*$", re.I)
_RANGE_AFTER = re.compile(r"^\s*[–-]\s*\d")
_HAS_YEAR = re.compile(r"\b(?:19|20|21)\d\d\b|/\d\d\b")
_FILE_DATE = re.compile(r"(?<!\d)(?P<y>20\d\d)([-_.]?)(?P<m>[01]\d)\2(?P<d>[0-3]\d)(?!\d)")


def document_date(text: str, *, name: str = "", mtime: datetime | None = None,
                  now: datetime | None = None) -> tuple[datetime, str]:
    """(reference date, origin) for a document that is not an email."""
    fallback = mtime or now or datetime.now().astimezone()
    found = stated_date(text, fallback)
    if found is not None:
        return found
    from_name = file_name_date(name)
    if from_name is not None:
        return _at_hour(from_name, fallback), "file_name"
    return fallback, ("mtime" if mtime is not None else "now")


def stated_date(text: str, fallback: datetime) -> tuple[datetime, str] | None:
    """The date the document states about itself: front matter, a Date: line, its title."""
    head = text[:_HEAD_CHARS]
    front = _FRONT.match(head)
    if front is not None:
        m = _FRONT_DATE.search(front.group("body"))
        day = _own_day(m.group("v"), fallback, whole=True) if m else None
        if day is not None:
            return _at_hour(day, fallback), "front_matter"
        head = head[front.end():]
    lines = head.splitlines()[:_HEAD_LINES]
    day_first = day_first_for(text[:20000])
    for line in lines:
        m = _DATE_LINE.match(line)
        day = _own_day(m.group("v"), fallback, day_first) if m else None
        if day is not None:
            return _at_hour(day, fallback), "date_line"
    # a chat export or a log: its last dated message or day heading (when it was saved)
    stamps = message_references(text[:_CHAT_CHARS], fallback, day_first)
    if len(stamps) >= 2:
        return stamps[-1][1], "last_message"
    # a title and the lines right under it; a table's rows are data, not the title
    meaningful = [ln for ln in lines if ln.strip(" \t#*_=-")][:_TITLE_LINES]
    for line in meaningful:
        if line.lstrip().startswith("|"):
            break
        day = _own_day(line, fallback, day_first)
        if day is not None:
            return _at_hour(day, fallback), "title"
    return None


def file_name_date(name: str) -> date | None:
    """A date written in a file name (year first: 2026-03-10, 2026_03_10, 20260310)."""
    for m in _FILE_DATE.finditer(name.rsplit("/", 1)[-1]):
        try:
            return date(int(m["y"]), int(m["m"]), int(m["d"]))
        except ValueError:
            continue
    return None


def _own_day(value: str, fallback: datetime, day_first: bool | None = None, *,
             whole: bool = False) -> date | None:
    """The first full date in ``value`` (not part of a range, not "from 3 October"), never
    after ``fallback`` unless it states its year."""
    for start, end, expr in find_date_expressions(value):
        before = value[max(0, start - 16):start]
        ends_in_time = re.search(r"\d:\d\d\s*$|[ap]\.?m\.?\s*$", expr, re.I)
        if is_day_span(expr) or _RANGE_BEFORE.search(before) or _TALKS_ABOUT.search(before) or (
                not ends_in_time and _RANGE_AFTER.match(value[end:end + 4])):
            continue
        if not _FULL.search(expr):
            continue
        ms = resolve_date(expr, fallback, day_first=day_first)
        if ms is None:
            continue
        day = datetime.fromtimestamp(ms / 1000, fallback.tzinfo).date()
        if day > fallback.date() + timedelta(days=1) and not _HAS_YEAR.search(expr):
            earlier = resolve_date(expr, fallback - timedelta(days=365), day_first=day_first)
            if earlier is not None:
                day = datetime.fromtimestamp(earlier / 1000, fallback.tzinfo).date()
        if not date(1900, 1, 1) <= day <= fallback.date() + _AHEAD:
            continue  # "Date: 3 March 2062" in a file saved today: a typo, not its date
        return day
    if whole:
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


_MESSAGE_STAMP = re.compile(
    r"^[ \t]*\[?(?P<date>\d{1,2}/\d{1,2}/\d{2,4}|\d{4}-\d{2}-\d{2}|\d{1,2}\.\d{1,2}\.\d{2,4})"
    r",?[ \t]+(?:at[ \t]+)?(?P<h>\d{1,2}):(?P<mi>\d{2})(?::\d{2})?[ \t]*(?P<ap>[AaPp]\.?[Mm]\.?)?"
    r"\]?[ \t]*[-–:]?[ \t]*\S", re.M)
_MARK_TRIM = " \t-=*#_[]()—–:|"


def message_references(text: str, reference: datetime, day_first: bool | None = None
                       ) -> list[tuple[int, datetime, str]]:
    """Where a chat export's messages carry their own date: (offset, date, origin) in order.

    ``message``: a line stamped "03/04/2026, 18:22 - Ana: …" (that message's own time);
    ``day_heading``: a line that is only a date ("--- Friday 17 April ---", "## 2026-04-17"),
    the reference for what follows until the next one. One regex pass finds the lines that
    can be either; only those are parsed."""
    out: list[tuple[int, datetime, str]] = []
    for m in _STAMP_OR_MARK.finditer(text):
        stamp = _MESSAGE_STAMP.match(m.group(0))
        if stamp is not None:
            ms = resolve_date(stamp["date"], reference, day_first=day_first)
            hour, minute = int(stamp["h"]), int(stamp["mi"])
            if stamp["ap"]:
                hour = hour % 12 + (12 if stamp["ap"][0].lower() == "p" else 0)
            if ms is not None and hour < 24 and minute < 60:
                day = datetime.fromtimestamp(ms / 1000, reference.tzinfo).date()
                out.append((m.start(), datetime.combine(day, time(hour, minute)).astimezone(),
                            "message"))
            continue
        mark = m.group(0).strip(_MARK_TRIM + "\r\n")
        hits = find_date_expressions(mark) if 4 <= len(mark) <= 40 else []
        if len(hits) == 1 and hits[0][2] == mark and _FULL.search(mark) and not is_day_span(mark):
            ms = resolve_date(mark, reference, day_first=day_first)
            if ms is not None:
                day = datetime.fromtimestamp(ms / 1000, reference.tzinfo).date()
                out.append((m.start(), _at_hour(day, reference), "day_heading"))
    return out


_TRIM_CLASS = r"[ \t\-=*#_\[\]()—–:|]*"
#: A line that may be a message stamp or a day heading (checked properly afterwards).
_STAMP_OR_MARK = re.compile(
    r"^[ \t]*\[?(?:\d{1,2}/\d{1,2}/\d{2,4}|\d{4}-\d{2}-\d{2}|\d{1,2}\.\d{1,2}\.\d{2,4}),?"
    r"[ \t]+(?:at[ \t]+)?\d{1,2}:\d{2}[^\n]*"
    r"|^" + _TRIM_CLASS + r"(?:[A-Za-zéá]{3,}\.?,?[ \t]+)?(?:the[ \t]+)?"
    r"(?:\d{1,2}(?:st|nd|rd|th)?\.?[ \t]+(?:of[ \t]+|de[ \t]+)?[A-Za-zéá]{3,}\.?"
    r"|[A-Za-zéá]{3,}\.?[ \t]+\d{1,2}(?:st|nd|rd|th)?|\d{4}-\d{2}-\d{2}"
    r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4})(?:,?[ \t]+(?:de[ \t]+)?\d{4})?" + _TRIM_CLASS + r"$",
    re.M)


def _at_hour(day: date, fallback: datetime) -> datetime:
    """A date-only reference: 09:00 local time that day."""
    return datetime.combine(day, time(REFERENCE_HOUR)).astimezone()


_DAY_FIRST_LANGS = frozenset({"es", "fr", "de", "it", "pt", "nl"})
_LANG_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and to of is for with that we you this on are will be".split()),
    "es": frozenset("el la los las de que y en para con por una es del se al lo".split()),
    "fr": frozenset("le la les des et est pour avec que une du sur nous vous au dans".split()),
    "de": frozenset("der die das und ist nicht mit für wir ein eine zu den von auf".split()),
    "it": frozenset("il lo gli della che per con una sono del non di alla anche".split()),
    "pt": frozenset("o os as que para com uma não do da em dos ao mais por".split()),
    "nl": frozenset("de het een en van is dat niet met voor op wij ook zijn naar".split()),
}


def language_of(text: str) -> str | None:
    """The document's language by its commonest function words (None: too little text)."""
    words = re.findall(r"[a-zà-ÿ]+", text[:20000].lower())
    counts = {lang: sum(w in vocab for w in words) for lang, vocab in _LANG_WORDS.items()}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] >= 5 else None


def _locale_day_first() -> bool | None:
    """The OS locale's convention: en_US (and other month-first locales) False, C None."""
    import locale
    import os

    name = ""
    for var in ("LC_ALL", "LC_TIME", "LANG"):
        name = os.environ.get(var, "")
        if name:
            break
    if not name:
        try:
            name = locale.getlocale(locale.LC_TIME)[0] or ""
        except (ValueError, AttributeError):
            name = ""
    name = name.split(".")[0]
    if not name or name in ("C", "POSIX"):
        return None
    return name not in ("en_US", "en_PH", "en_CA", "es_US", "en_AS", "en_GU", "en_UM")


def day_first_for(text: str) -> bool | None:
    """How ``text`` writes ambiguous numeric dates like 03/04/2026: its other numeric dates
    that are unambiguous (13/04 is day-first, 04/13 month-first), then 24-hour times beside
    them (WhatsApp's "03/04/2026, 18:22"), then its language (es fr de it pt nl: day-first),
    then the OS locale. None: no evidence (month-first, the US reading)."""
    dmy = mdy = 0
    for a, b in numeric_dates(text):
        dmy += a > 12 >= b
        mdy += b > 12 >= a
    if dmy != mdy:
        return dmy > mdy
    if re.search(r"\b\d{1,2}/\d{1,2}/\d{2,4},?\s+(?:1[3-9]|2[0-3]):[0-5]\d", text):
        return True
    lang = language_of(text)
    if lang in _DAY_FIRST_LANGS:
        return True
    return _locale_day_first()
