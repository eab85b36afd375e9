"""Find and resolve English (and common Spanish, French, German) date expressions as epoch ms.

Rules (all relative to ``reference``, in its time zone; a naive reference means local time):

* Date-only expressions resolve to 00:00 of that local day; an adjacent time ("Friday 3pm",
  "tomorrow at 10:30", "3pm on Friday") gives that local time instead.
* A day and month without a year ("Dec 1") resolves to the earliest occurrence on or after
  ``reference - 60 days``: upcoming dates stay upcoming, recently passed ones (documents talk
  about recent deadlines) stay in the past, anything older rolls over to the next year.
* "Friday" / "this Friday" = the coming Friday (today if today is Friday); "next Friday" = that
  plus 7 days; "last Friday" = the most recent one before today. "next week" = Monday of next
  week, "end of week"/"EOW" = Friday of this week, "end of month"/"EOM" = its last day,
  "end of day"/"EOD"/"tonight" = today, "next month" = the 1st of next month.
* A weekday beside a day and month without a year ("Thu 16 Apr") picks, among the year the
  rule above gives and the years either side, the one in which that day is that weekday
  (closest to ``reference``); "Wednesday the 25th" is the 25th of the month nearest to
  ``reference`` (from a week before it) in which the 25th is a Wednesday.
* Numeric dates: ``2026-12-01`` (ISO), ``12/01/2026`` (month/day unless the first number is
  > 12, or ``day_first`` says the document writes day/month: see
  :func:`sidecar.readers.docdate.day_first_for`),
  ``1.12.2026`` (European day.month.year). Invalid dates give None, never raise.
* A span of days ("10–11 March", "9 to 11 August", "March 10–11, 2026") is its first day.
* A month name alone is not a date, so "we may ship" or "the march" never match.
* Spanish: "14 de abril (de 2025)", "el viernes", "antes del lunes", "hoy", "mañana" (not
  "la mañana": the morning), "pasado mañana", "la próxima semana"/"la semana que viene",
  "el mes que viene", "fin de mes" — resolved with the same rules.
* French and German: month and weekday names ("vendredi 3 juillet", "Freitag, 3. Juli"),
  "demain", "aujourd'hui", "après-demain", "heute", "übermorgen", "gestern".
* A date far from the document's reference (``date_values.within_horizon``) is not one
  of its dates.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, time, timedelta
from typing import NamedTuple

_MONTHS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
           "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
           "ene": 1, "abr": 4, "ago": 8, "set": 9, "dic": 12,
           "fév": 2, "fev": 2, "avr": 4, "aoû": 8, "aou": 8, "déc": 12,
           "mär": 3, "mae": 3, "okt": 10, "dez": 12}
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
             "lun": 0, "mar": 1, "mié": 2, "mie": 2, "jue": 3, "vie": 4, "sáb": 5, "sab": 5,
             "dom": 6, "mer": 2, "jeu": 3, "ven": 4, "sam": 5, "dim": 6,
             "die": 1, "mit": 2, "don": 3, "fre": 4, "son": 6}
#: Weekday names written in lower case (not English): a date on their own.
_ES_WEEKDAYS = ("lunes", "martes", "miércoles", "miercoles", "jueves", "viernes", "sábado",
                "sabado", "domingo", "lundi", "mardi", "mercredi", "jeudi", "vendredi",
                "samedi", "dimanche", "montag", "dienstag", "mittwoch", "donnerstag",
                "freitag", "samstag", "sonntag")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
_RELATIVE_DAYS = {"today": 0, "tonight": 0, "tomorrow": 1, "tmrw": 1, "yesterday": -1,
                  "day after tomorrow": 2, "day before yesterday": -2,
                  "hoy": 0, "mañana": 1, "pasado mañana": 2, "ayer": -1, "anteayer": -2,
                  "aujourd'hui": 0, "demain": 1, "après-demain": 2,
                  "heute": 0, "übermorgen": 2, "gestern": -1}
_RECENT_PAST = timedelta(days=60)
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

_I = re.IGNORECASE
_MON = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
        r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
        r"|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre"
        r"|noviembre|diciembre"
        r"|janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[ûu]t|septembre|octobre"
        r"|d[ée]cembre|januar|februar|m(?:ä|ae)rz|juni|juli|oktober|dezember)")
#: A month name (English, Spanish, French or German; full or abbreviated) as a regex fragment.
MONTH_PATTERN = _MON
_WD = (r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday"
       r"|lunes|martes|mi[ée]rcoles|jueves|viernes|s[áa]bado|domingo"
       r"|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche"
       r"|montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag"
       r"|mon|tues?|wed|thu(?:rs?)?|fri|sat|sun)")
_NUM = r"(?P<n>\d{1,3}|a\s+couple\s+of|" + "|".join(_NUMBERS) + ")"
_YEAR = r"(?P<y>(?:19|20|21)\d\d)\b"
# "Friday, Dec 4" / "Fri 12/04/2026": a leading weekday that the explicit date overrides.
_WDP = r"(?:\b(?P<wdp>" + _WD + r")\b\.?,?\s+(?:the\s+)?)?"
_TIME = (r"(?:(?P<h>1[0-2]|0?[1-9])(?::(?P<mi>[0-5]\d))?\s*(?P<ap>[ap])(?:\.m\b\.?|m\b)"
         r"|(?P<h2>[01]?\d|2[0-3]):(?P<mi2>[0-5]\d)(?::[0-5]\d)?(?![\d:]|\.\d)"
         r"|(?P<noon>noon|midday)\b)")

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("iso", re.compile(
        r"(?<![\w./-])(?P<y>\d{4})(?P<sep>[-/])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})"
        r"(?P<t>T\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d:?\d\d)?)?(?![\w/]|[-.]\d)", _I)),
    ("num", re.compile(
        _WDP + r"(?<![\w/.-])(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<y>\d{4}|\d{2})(?![\w/]|[-.]\d)",
        _I)),
    ("dot", re.compile(r"(?<![\w.])(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})(?!\w|\.\d)")),
    ("md", re.compile(
        _WDP + r"\b(?P<mon>" + _MON + r")(?:\.\s*|\s+)(?P<d>\d{1,2})(?:st|nd|rd|th)?\b"
        r"(?![.:]\d)(?P<d2>\s*[-–—]\s*\d{1,2}(?:st|nd|rd|th)?\b)?(?:,?\s*" + _YEAR + ")?", _I)),
    ("dmr", re.compile(  # "10–11 March", "9 to 11 August": a span of days
        _WDP + r"(?<![\w.,:/-])(?P<d>\d{1,2})(?:st|nd|rd|th)?(?:\s*[-–—]\s*|\s+(?:to|until|till"
        r"|through|thru)\s+)(?P<d2>\d{1,2})(?P<ord>st|nd|rd|th)?\s+(?P<of>(?:of|de)\s+)?"
        r"(?P<mon>" + _MON + r")\b(?:\.?,?\s*" + _YEAR + ")?", _I)),
    ("dm", re.compile(
        _WDP + r"(?<![\w.,:/-])(?P<d>\d{1,2})(?:(?P<ord>st|nd|rd|th)|(?P<gdot>\.))?\s+"
        r"(?P<of>(?:of|de)\s+)?"
        r"(?P<mon>" + _MON + r")\b(?:\.?,?\s*(?:de(?:l)?\s+)?" + _YEAR + ")?", _I)),
    ("rel", re.compile(
        r"\b(?:the\s+)?(?P<rel>day\s+after\s+tomorrow|day\s+before\s+yesterday)\b"
        r"|\b(?P<rel1>today|tonight|tomorrow|tmrw|yesterday|hoy|ayer|anteayer"
        r"|aujourd['’]hui|apr[èe]s-demain|demain|heute|übermorgen|gestern)(?![\w-])"
        r"|\b(?P<rel2>pasado\s+mañana)(?!\w)"
        r"|(?<!\bla\s)(?<!\bpor\s)(?<!\bde\s)(?<!\bsta\s)(?<!\w)(?P<rel3>mañana)(?!\w)", _I)),
    ("end", re.compile(
        r"\b(?:(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?(?P<enext>next\s+)?"
        r"(?:business\s+|working\s+|work\s+)?(?P<eunit>day|week|month|year)"
        r"|(?P<eabbr>eod|eow|eom|eoy|cob)|close\s+of\s+business"
        r"|(?:a\s+)?(?:fin(?:al)?(?:es)?)\s+de(?:l)?\s+(?P<esunit>mes|año))\b", _I)),
    ("next", re.compile(r"\b(?P<nmod>next|last)\s+(?P<nunit>week|month|year)\b", _I)),
    ("es_next", re.compile(
        r"\b(?:(?:la|el)\s+)?(?:(?P<pre>pr[óo]xim[oa]|siguiente)\s+(?P<unit1>semana|mes|año)"
        r"|(?P<unit2>semana|mes|año)\s+(?:que\s+viene|pr[óo]xim[oa]|siguiente))(?!\w)", _I)),
    ("in", re.compile(
        r"\b(?:in|within)\s+" + _NUM + r"\s+(?P<unit>day|week|month|year)s?\b", _I)),
    ("in", re.compile(
        r"\b" + _NUM + r"\s+(?P<unit>day|week|month|year)s?\s+"
        r"(?:from\s+(?:now|today)|(?P<ago>ago))\b", _I)),
    ("wdnum", re.compile(
        r"\b(?P<wd>" + _WD + r")\b\.?,?\s+(?P<the>the\s+)?(?P<d>\d{1,2})(?P<ord>st|nd|rd|th)?\b"
        r"(?!\s*(?:[ap]\.?m\b|[:.]\d|h\b|hrs?\b|o'?clock))", _I)),
    ("wd", re.compile(
        r"\b(?:(?P<mod>this\s+coming|the\s+coming|this|next|coming|last|past)\s+)?"
        r"(?P<wd>" + _WD + r")\b", _I)),
)
_SUFFIX = re.compile(r"[ \t]*,?[ \t]*(?:(?:at|@|by|around)[ \t]*)?" + _TIME, _I)
_PREFIX = re.compile(r"(?<![\w:.])(?:(?:at|@)[ \t]*)?" + _TIME + r"[ \t]*,?[ \t]*(?:on[ \t]+)?\Z",
                     _I)
_LEAD = re.compile(
    r"^(?:(?:due|on|by|until|till|til|before|after|from|starting|as\s+of|deadline:?"
    r"|no\s+later\s+than|not\s+later\s+than|antes\s+del?|para\s+el|para|hasta\s+el|hasta"
    r"|el|a\s+m[áa]s\s+tardar|le|avant\s+le|d'ici\s+le|pour\s+le|jusqu'au|bis(?:\s+zum)?"
    r"|am|vor\s+dem)\s+)+", _I)
_TRAILING = " \t\r\n.,;:!?)\"'"


class _Hit(NamedTuple):
    start: int
    end: int
    kind: str
    match: re.Match[str]
    time: re.Match[str] | None


#: Months written after "14." (German style): names no English word shares.
_DOT_MONTH = re.compile(r"(?:januar|februar|m(?:ä|ae)rz|mai|juni|juli|oktober|dezember|janvier"
                        r"|f[ée]vrier|mars|avril|juin|juillet|ao[ûu]t|septembre|octobre"
                        r"|d[ée]cembre)$", re.I)


def _valid_day(year: int | None, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or day < 1:
        return False
    if year is None:
        return day <= calendar.monthrange(2000, month)[1]  # leap year: Feb 29 allowed
    return 1 <= year <= 9999 and day <= calendar.monthrange(year, month)[1]


def numeric_dates(text: str) -> list[tuple[int, int]]:
    """(first, second) number of every a/b/yyyy date in ``text``: evidence of its order."""
    return [(int(m["a"]), int(m["b"])) for m in _PATTERNS[1][1].finditer(text)]


def _num_ymd(m: re.Match[str], day_first: bool | None = None) -> tuple[int, int, int]:
    a, b, y = int(m["a"]), int(m["b"]), m["y"]
    year = int(y) + 2000 if len(y) == 2 else int(y)
    if a > 12 or (day_first and b <= 12):
        return (year, b, a)
    return (year, a, b)


def _plausible(kind: str, m: re.Match[str]) -> bool:
    if kind in ("iso", "dot"):
        return _valid_day(int(m["y"]), int(m["m"]), int(m["d"]))
    if kind == "num":
        return _valid_day(*_num_ymd(m)) or _valid_day(*_num_ymd(m, True))
    if kind == "wdnum":
        return 1 <= int(m["d"]) <= 31 and bool(
            m["ord"] or m["the"] or m["wd"].lower() in _ES_WEEKDAYS)
    if kind in ("md", "dm", "dmr"):
        month = _month_of(m["mon"])
        year, day = (int(m["y"]) if m["y"] else None), int(m["d"])
        if not _valid_day(year, month, day) or (kind == "dmr" and not (
                day < int(m["d2"]) and _valid_day(year, month, int(m["d2"])))):
            return False  # "28–3 March", "20–31 April": no span of days
        # "the 2 may conflict": lowercase verb-like months need stronger evidence after a number.
        if m.groupdict().get("gdot") and not _DOT_MONTH.match(m["mon"]):
            return False  # "2. May I ask": a numbered list, unless the month is German/French
        ambiguous = m["mon"] in ("may", "march", "mar")
        return not (kind != "md" and ambiguous
                    and not (m["ord"] or m["of"] or m["y"] or m["wdp"]))
    if kind == "wd":
        word = m["wd"]
        if m.string[max(0, m.start() - 4): m.start()].lower() == "los ":
            return False  # "los lunes": every Monday, not a date
        # an abbreviation: "Fri" yes, "sun"/"wed" no
        if not word.lower().endswith("day") and word.lower() not in _ES_WEEKDAYS:
            return word[0].isupper() and (word.lower() != "sun" or m["mod"] is not None)
    return True


def _scan(text: str) -> list[_Hit]:
    found: list[tuple[int, int, str, re.Match[str]]] = []
    for kind, rx in _PATTERNS:
        found.extend((m.start(), m.end(), kind, m) for m in rx.finditer(text)
                     if _plausible(kind, m))
    found.sort(key=lambda h: (h[0], h[0] - h[1]))
    chosen: list[tuple[int, int, str, re.Match[str]]] = []
    for hit in found:
        if not chosen or hit[0] >= chosen[-1][1]:
            chosen.append(hit)
    hits: list[_Hit] = []
    prev_end = 0
    for i, (start, end, kind, m) in enumerate(chosen):
        limit = chosen[i + 1][0] if i + 1 < len(chosen) else len(text)
        tm = None
        if not (kind == "iso" and m["t"]):
            tm = _SUFFIX.match(text, end, limit)
            if tm is not None:
                end = tm.end()
            else:
                tm = _PREFIX.search(text, max(prev_end, start - 40), start)
                if tm is not None:
                    start = tm.start()
        hits.append(_Hit(start, end, kind, m, tm))
        prev_end = end
    return hits


def _add_months(d: date, months: int) -> date:
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(d.day, calendar.monthrange(year, month + 1)[1]))


def _infer_year(month: int, day: int, today: date, weekday: int | None = None) -> date | None:
    threshold = today - _RECENT_PAST
    plain = None
    for year in range(today.year - 1, today.year + 9):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate >= threshold:
            plain = candidate
            break
    if plain is None or weekday is None or plain.weekday() == weekday:
        return plain
    # "Thu 16 Apr": the nearby year in which the 16th of April is a Thursday
    near = []
    for year in (plain.year - 1, plain.year + 1, plain.year - 2, plain.year + 2):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate.weekday() == weekday:
            near.append(candidate)
    return min(near, key=lambda d: abs((d - today).days)) if near else plain


def _weekday_month(day: int, weekday: int, today: date) -> date | None:
    """"Wednesday the 25th": the nearest month (two back to a year ahead; the past counts
    three times its distance) in which the 25th is a Wednesday."""
    first = today.replace(day=1)
    found = []
    for step in range(-2, 13):
        month = _add_months(first, step)
        if day <= calendar.monthrange(month.year, month.month)[1]:
            candidate = month.replace(day=day)
            if candidate.weekday() == weekday:
                found.append(candidate)
    delta = lambda d: (d - today).days if d >= today else 3 * (today - d).days  # noqa: E731
    return min(found, key=delta) if found else None


def _count(m: re.Match[str]) -> int:
    word = m["n"].lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word, 2)  # "a couple of" -> 2


def _month_of(word: str) -> int:
    """A month name's number ("juin" 6 and "juillet" 7 share their first three letters)."""
    lower = word.lower()
    if lower.startswith("juil"):
        return 7
    if lower.startswith("juin"):
        return 6
    return _MONTHS[lower[:3]]


def _weekday_of(word: str | None) -> int | None:
    return _WEEKDAYS.get(word[:3].lower()) if word else None


def _hit_date(kind: str, m: re.Match[str], today: date,
              day_first: bool | None = None) -> date | None:
    if kind in ("iso", "dot"):
        return date(int(m["y"]), int(m["m"]), int(m["d"]))
    if kind == "num":
        ymd = _num_ymd(m, day_first)
        return date(*ymd) if _valid_day(*ymd) else date(*_num_ymd(m, not day_first))
    if kind in ("md", "dm", "dmr"):
        month, day = _month_of(m["mon"]), int(m["d"])
        if m["y"]:
            return date(int(m["y"]), month, day)
        return _infer_year(month, day, today, _weekday_of(m["wdp"]))
    if kind == "wdnum":
        return _weekday_month(int(m["d"]), _WEEKDAYS[m["wd"][:3].lower()], today)
    if kind == "rel":
        key = " ".join((m["rel"] or m["rel1"] or m["rel2"] or m["rel3"]).lower().split())
        key = key.replace("’", "'").replace("apres", "après")
        return today + timedelta(days=_RELATIVE_DAYS[key])
    monday = today - timedelta(days=today.weekday())
    if kind == "end":
        unit = {"mes": "month", "año": "year"}.get((m["esunit"] or "").lower()) or (
            m["eunit"] or m["eabbr"] or "day").lower()
        ahead = 1 if m["enext"] else 0
        if unit in ("day", "eod", "cob", "close"):
            return today + timedelta(days=ahead)
        if unit in ("week", "eow"):
            return monday + timedelta(days=4 + 7 * ahead)
        if unit in ("month", "eom"):
            first = _add_months(today.replace(day=1), ahead)
            return first.replace(day=calendar.monthrange(first.year, first.month)[1])
        return date(today.year + ahead, 12, 31)
    if kind == "next":
        step = 1 if m["nmod"].lower() == "next" else -1
        unit = m["nunit"].lower()
        if unit == "week":
            return monday + timedelta(days=7 * step)
        if unit == "month":
            return _add_months(today.replace(day=1), step)
        return date(today.year + step, 1, 1)
    if kind == "es_next":
        unit = (m["unit1"] or m["unit2"]).lower()
        if unit == "semana":
            return monday + timedelta(days=7)
        if unit == "mes":
            return _add_months(today.replace(day=1), 1)
        return date(today.year + 1, 1, 1)
    if kind == "in":
        n = _count(m) * (-1 if m.groupdict().get("ago") else 1)
        unit = m["unit"].lower()
        if unit in ("day", "week"):
            return today + timedelta(days=n * (7 if unit == "week" else 1))
        return _add_months(today, n * (12 if unit == "year" else 1))
    # weekday
    target = _WEEKDAYS[m["wd"][:3].lower()]
    mod = " ".join((m["mod"] or "").lower().split())
    if mod in ("last", "past"):
        return today - timedelta(days=(today.weekday() - target) % 7 or 7)
    coming = today + timedelta(days=(target - today.weekday()) % 7)
    return coming + timedelta(days=7) if mod == "next" else coming


def _hit_time(tm: re.Match[str] | None) -> time | None:
    if tm is None:
        return None
    if tm["noon"]:
        return time(12)
    if tm["ap"]:
        hour = int(tm["h"]) % 12 + (12 if tm["ap"].lower() == "p" else 0)
        return time(hour, int(tm["mi"] or 0))
    return time(int(tm["h2"]), int(tm["mi2"]))


def _dt_ms(dt: datetime, reference: datetime) -> int | None:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=reference.tzinfo)  # still naive (local) if the reference is
    ms = round(dt.timestamp() * 1000)
    return ms if abs(ms) <= _MAX_MS else None


def _resolve_hit(hit: _Hit, reference: datetime, day_first: bool | None = None) -> int | None:
    m = hit.match
    if hit.kind == "iso" and m["t"]:
        stamp = f"{int(m['y']):04d}-{int(m['m']):02d}-{int(m['d']):02d}{m['t'].upper()}"
        return _dt_ms(datetime.fromisoformat(stamp), reference)
    day = _hit_date(hit.kind, m, reference.date(), day_first)
    if day is None:
        return None
    return _dt_ms(datetime.combine(day, _hit_time(hit.time) or time()), reference)


def find_date_expressions(text: str) -> list[tuple[int, int, str]]:
    """(start, end, expression) of every date/deadline expression in text, in order, non-overlapping."""  # noqa: E501
    if not isinstance(text, str) or not text:
        return []
    return [(h.start, h.end, text[h.start:h.end]) for h in _scan(text)]


def is_day_span(expr: str) -> bool:
    """"10–11 March": a span of days resolves to its first day, yet dates no document."""
    return any(h.kind in ("md", "dmr") and h.match["d2"] for h in _scan(expr))


def year_is_inferred(expr: str) -> bool:
    """"3 March", "Mar 3", "10–11 March": a day of the year whose year the reference chose
    (another year may be meant); "in a week", "Friday" or "3 March 2025" are fixed by it."""
    return any(h.kind in ("md", "dm", "dmr") and not h.match["y"] for h in _scan(expr))


def resolve_date(expr: str, reference: datetime, *, day_first: bool | None = None) -> int | None:
    """The expression as epoch milliseconds (UTC) or None if it cannot be resolved.

    ``day_first``: how the document writes ambiguous numeric dates (``3/4/2026``): True
    day/month, False or None month/day."""
    if not isinstance(expr, str) or not isinstance(reference, datetime):
        return None
    text = _LEAD.sub("", expr.strip())
    for candidate in dict.fromkeys((text, text.rstrip(_TRAILING))):
        hits = _scan(candidate)
        if len(hits) == 1 and hits[0].start == 0 and hits[0].end == len(candidate):
            try:
                return _resolve_hit(hits[0], reference, day_first)
            except (ValueError, OverflowError, OSError):
                return None
    return None
