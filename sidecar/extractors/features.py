"""Cheap, explainable evidence about a candidate span: is it a task, a decision, a milestone?

Weights are log-odds contributions; :func:`task_logit` sums them into a prior that the
model's yes/no log-probabilities refine. English and Spanish cues.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from itertools import pairwise

from sidecar.extractors.candidates import Candidate

_W = r"[\wÀ-ÿ'’-]+"

IMPERATIVE_VERBS = frozenset("""
add adjust agree align answer approve archive arrange ask assign attach audit back backup book
brief build buy calculate call cancel change check chase choose clarify clean close collect
compile complete compress configure confirm connect contact convert coordinate copy correct
create crop deal debug decide define delete deliver deploy describe design double-check download
draft drop edit email enable estimate evaluate export extend file fill finalise finalize find
finish fix follow forward gather get give go handle hire implement import improve include
inform install integrate invite invoice issue keep label launch let list look make manage map
measure meet merge migrate move negotiate note notify obtain onboard order organise organize
outline pay pick ping plan post prepare present price print prioritise prioritize produce
proofread propose provide publish purchase push put raise reach read rebook reconcile record
redesign reduce refactor register reimburse remind remove rename renew reorder repair replace
reply report request research reschedule resend reserve resize resolve respond restore
retest return review revise rewrite run save scan schedule scope secure select send set settle
setup share ship shoot shorten sign sketch sort source specify split start submit summarise
summarize swap sync take talk test text tidy track train transfer translate try tweak unblock
update upgrade upload validate verify wire write
enviar revisar preparar actualizar llamar confirmar mandar reservar pagar facturar subir
terminar entregar agendar programar contactar comprar diseñar escribir corregir cambiar
""".split())

_REQUEST = re.compile(
    r"\b(please|pls|can you|could you|would you|will you|can we|could we|need you to|"
    r"i need|we need|needs? to|have to|has to|must|should|make sure|don'?t forget|"
    r"remember to|be sure to|let'?s|action required|asap|por favor|hay que|tenemos que|"
    r"tienes que|necesito|necesitamos|no olvides|recuerda)\b", re.I)
#: "Could you please fix…", "Please send…": a request addressed to the reader, verb first.
_DIRECT_REQUEST = re.compile(
    rf"^(?:would you mind |(?:could|can|would|will) you (?:please |kindly |also )?|"
    rf"(?:please|pls|kindly) )({_W})", re.I)
#: "Sam to refine…", "Jess will adapt…": a named person and a verb, whatever the verb.
_NAMED_ASSIGN = re.compile(
    r"^(?:[A-ZÀ-Ý][\wÀ-ÿ'’-]+(?: (?:and|&|y) [A-ZÀ-Ý][\wÀ-ÿ'’-]+)?)\s+(?:(to)|will|is going to|"
    r"should|needs to|has to|must)\s+(?!be\b|have\b|not\b)([a-z][\wÀ-ÿ'’-]+)")
#: "I'll send…", "we will prepare…", "he'll send…": a commitment with its verb.
_FIRST_PERSON = re.compile(
    r"\b(?:i'?ll|i will|i'?m going to|i am going to|we'?ll|we will|we'?re going to|he'?ll|"
    r"she'?ll|they'?ll|i can|let me)\s+(?:also\s+|just\s+|then\s+|quickly\s+)?"
    r"(?!be\b|have\b|see\b|try\b|probably\b|need\b)([a-z][\w'’-]+)", re.I)
#: Requests phrased as questions: "would you mind…", "is it possible to…", "Sam can you…".
_ASKING = re.compile(
    r"\b(?:(?:can|could|would|will) you|would you mind|is it possible to|would it be "
    r"possible to|any chance you could|do you mind)\b", re.I)
_COMMIT = re.compile(
    r"\b(i'?ll|i will|we'?ll|we will|i'?m going to|i am going to|will send|will do|"
    r"will update|will prepare|will follow|voy a|vamos a|me encargo)\b", re.I)
_ASSIGN = re.compile(rf"^(?:[A-ZÀ-Ý]{_W}(?: (?:and|&|y) [A-ZÀ-Ý]{_W})?|I|we|We|you|You)"
                     rf"\s+(?:to|will|should|must|needs to|has to|can)\s+({_W})")
_DEADLINE = re.compile(
    r"\b(by|before|until|due|deadline|no later than|eod|eow|end of (?:day|week|month)|"
    r"tomorrow|tonight|today|this week|next week|monday|tuesday|wednesday|thursday|friday|"
    r"saturday|sunday|mon|tue|wed|thu|fri|jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|"
    r"may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|"
    r"dec(?:ember)?|antes del?|para el|el (?:lunes|martes|miércoles|jueves|viernes)|"
    r"mañana|hoy)\b|\b\d{1,2}[/.-]\d{1,2}(?:[/.-]\d{2,4})?\b|\b\d{4}-\d{2}-\d{2}\b", re.I)
_PAST = re.compile(
    r"\b(was|were|did|done|completed|finished|sent|shipped|delivered|resolved|fixed|"
    r"merged|approved|signed|paid|received|already|yesterday|last week|went|had|"
    r"discussed|agreed|decided|talked|met|enviado|terminado|hecho|ya)\b", re.I)
_QUESTION_START = re.compile(
    r"^(what|why|how|who|when|where|which|did|do|does|is|are|was|were|has|have|any|"
    r"qué|por qué|cómo|quién|cuándo)\b", re.I)
_SOCIAL = re.compile(
    r"^(thanks|thank you|cheers|best|regards|kind regards|hi|hello|hey|dear|good morning|"
    r"hope you|sounds good|great|perfect|ok|okay|sure|no worries|lol|haha|gracias|"
    r"saludos|hola|buenos días|un abrazo)\b", re.I)
_FYI = re.compile(r"\b(fyi|just so you know|heads up|note that|for reference|"
                  r"for your information|in case)\b", re.I)
_TASK_SECTION = re.compile(
    r"(action|to ?do|todo|task|next step|follow[- ]?up|open item|deliverable|checklist|"
    r"pendiente|tarea|próximos pasos|acciones|por hacer|requests?|change requests?|"
    r"feedback|revisions?)", re.I)
_NON_TASK_SECTION = re.compile(
    r"(attendee|participant|present|decision|summary|background|context|discussion|notes?$|"
    r"agenda|minutes|recap|overview|highlights|done|completed|shipped|asistentes|"
    r"resumen|decisiones|contexto)", re.I)
_NOTE_CUE = re.compile(
    r"^(decision|decided|we decided|agreed|we agreed|approved|budget|the client prefers|"
    r"client prefers|important|key point|note|policy|rule|decisión|acordamos|"
    r"decidimos)\b|\b(decided|agreed|approved|prefers?|will go with|we go with|"
    r"going with|signed off)\b", re.I)
#: Sections whose lines are facts worth keeping (money, scope, dates, constraints).
_FACT_SECTION = re.compile(r"(budget|scope|timeline|key dates|constraints?|goals?|"
                           r"requirements?|risks?|pricing|terms|presupuesto|alcance)", re.I)
_FIGURE = re.compile(r"[£$€¥]\s?\d|\d\s?(?:%|eur|usd|gbp|nok|sek|dkk|chf|k\b)"
                     r"|\b\d{1,3}(?:,\d{3})+\b", re.I)
#: Facts that stick: something decided, fixed, confirmed or scheduled.
_SETTLED = re.compile(
    r"\b(?:is|are|was|were|has been|have been|stays?|remains?|queda|quedan)\s+(?:now\s+)?"
    r"(?:approved|confirmed|fixed|final|agreed|signed|booked|scheduled|planned|capped|set|"
    r"out of scope|in scope|valid|the favourite|aprobad[oa]s?|confirmad[oa]s?)\b"
    r"|\b(?:stays? (?:at|as|on|with|out)|moves? (?:to|from)|is planned for|out of scope|"
    r"no longer|instead of|rather than|only\b.{0,30}\bnot\b)", re.I)
#: Sections of a report or minutes whose statements are its substance.
_SUMMARY_SECTION = re.compile(r"(summary|discussion|background|context|overview|highlights|"
                              r"where we are|status|scope|resumen|contexto|antecedentes)", re.I)
_NOTE_SECTION = re.compile(r"(decision|key point|notes?$|agreement|outcome|decisiones|"
                           r"acuerdos)", re.I)
_MILESTONE = re.compile(
    r"\b(launch|release|go[- ]live|deadline|delivery|deliver|kick-?off|milestone|beta|alpha|"
    r"demo|presentation|workshop|review meeting|sign-?off|handover|hand-off|opening|"
    r"event|deadline|lanzamiento|entrega|presentación|reunión|"
    r"pitch|opens|goes live|go(?:es)? to print|print date|(?:next |board |steering |review )"
    r"meeting|photo ?shoot|shoot|festival|fair|conference|exhibition|premiere|finale|"
    r"freeze|booked|scheduled|check-in|catch-up|apertura|inauguración|sesión de fotos)\b", re.I)
_PRIORITY_HIGH = re.compile(
    r"\b(urgent|urgently|asap|as soon as possible|critical|blocker|blocking|high priority|"
    r"top priority|immediately|right away|p0|p1|!!+|urgente|cuanto antes|prioridad alta)\b",
    re.I)
_PRIORITY_LOW = re.compile(
    r"\b(whenever (?:you|i|we) (?:get|have|find) (?:a )?(?:chance|time|a minute)|no rush|"
    r"nice to have|"
    r"low priority|if you have time|when you have time|someday|eventually|not urgent|"
    r"sin prisa|cuando puedas|baja prioridad)\b", re.I)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The named contributions behind a score (kept for debugging and tests)."""

    logit: float
    parts: tuple[tuple[str, float], ...]


_CONNECTOR = re.compile(r"^\s*(?:(?:and|then|also|plus|so|but|finally|next|after that|"
                        r"and then|y|luego|también|después)\b[\s,]*)+", re.I)


def strip_connectors(text: str) -> str:
    """'Then share it' → 'share it': a leading connector hides the imperative verb."""
    return _CONNECTOR.sub("", text)


def _first_word(text: str) -> str:
    m = re.match(rf"\s*({_W})", strip_connectors(text))
    return m.group(1).lower().strip("'’") if m else ""


def priority_of(text: str, section: str | None = None) -> str:
    """Priority from words: "urgent"/"ASAP" high, "whenever you get a chance" low."""
    scope = f"{section or ''} {text}"
    if _PRIORITY_HIGH.search(scope):
        return "high"
    if _PRIORITY_LOW.search(scope):
        return "low"
    return "medium"


def has_deadline(text: str) -> bool:
    return bool(_DEADLINE.search(text))


def add_if_seen(parts: list[tuple[str, float]], name: str) -> bool:
    """Has feature ``name`` already fired (so a stronger sibling need not double-count)?"""
    return any(n == name for n, _ in parts)


def task_evidence(c: Candidate) -> Evidence:
    text = c.text
    parts: list[tuple[str, float]] = [("bias", -2.0)]

    def add(name: str, w: float, cond: object = True) -> None:
        if cond:
            parts.append((name, w))

    first = _first_word(text)
    add("checkbox", 3.0, c.shape == "checkbox")
    add("bullet", 0.6, c.shape == "bullet")
    add("sentence", -0.6, c.shape == "sentence")
    add("table_row", 0.8, c.shape == "cell")
    label = (c.label or "").lower()
    add("task_label", 3.5, label in {"action", "actions", "todo", "to do", "to-do", "task",
                                     "item", "what", "deliverable", "activity",
                                     "tasks", "next step", "next steps", "follow-up",
                                     "follow up", "tarea", "pendiente", "reminder"})
    add("note_label", -3.0, label in {"decision", "decisions", "decided", "agreed", "note",
                                      "notes", "fyi", "attendees", "present", "date",
                                      "subject", "from", "to", "cc", "status", "summary",
                                      "agenda", "budget", "decisión", "acuerdo", "nota",
                                      "asistentes", "fecha"})
    section = c.section or ""
    add("task_section", 2.0, bool(section) and bool(_TASK_SECTION.search(section)))
    add("non_task_section", -1.5, bool(section) and bool(_NON_TASK_SECTION.search(section))
        and not _TASK_SECTION.search(section))
    add("imperative", 2.0, first in IMPERATIVE_VERBS)
    add("assignment", 2.2, bool(_ASSIGN.match(text)) and
        (_ASSIGN.match(text).group(1).lower() in IMPERATIVE_VERBS))  # type: ignore[union-attr]
    add("owner", 0.8, c.owner is not None)
    add("request", 1.6, bool(_REQUEST.search(text)))
    direct = _DIRECT_REQUEST.match(strip_connectors(text))
    direct_verb = direct is not None and (
        direct.group(1).lower() in IMPERATIVE_VERBS or direct.group(1).lower().endswith("ing"))
    add("direct_request", 2.0, direct_verb)
    named = _NAMED_ASSIGN.match(strip_connectors(text))
    add("named_assignment", 2.6 if named is not None and named.group(1) else 2.0,
        named is not None and not add_if_seen(parts, "assignment"))
    promise = _FIRST_PERSON.search(text)
    add("commitment", 1.2, bool(_COMMIT.search(text)))
    add("promise_verb", 1.2, promise is not None)
    asking = bool(_ASKING.search(text))
    add("asking", 1.4, asking and not direct_verb)
    add("deadline", 1.0, has_deadline(text))
    actionable = direct is not None or asking or promise is not None or named is not None
    add("past", -1.6, bool(_PAST.search(text)) and first not in IMPERATIVE_VERBS
        and not actionable)
    add("question", -1.2, text.rstrip().endswith("?") and not _REQUEST.search(text)
        and not asking and bool(_QUESTION_START.match(text)))
    add("social", -3.5, bool(_SOCIAL.match(text)) and not actionable)
    add("fyi", -1.2, bool(_FYI.search(text)))
    add("note_cue", -1.5, bool(_NOTE_CUE.search(text)) and first not in IMPERATIVE_VERBS)
    words = len(text.split())
    add("short", -1.5, words < 3)
    add("long", -1.0, words > 35)
    add("heading_like", -1.0, text.isupper())
    return Evidence(sum(w for _, w in parts), tuple(parts))


SETTLED_W = 2.5
SUMMARY_W = 1.5


def note_evidence(c: Candidate) -> Evidence:
    parts: list[tuple[str, float]] = [("bias", -3.0)]
    label = (c.label or "").lower()
    if label in {"decision", "decisions", "decided", "agreed", "note", "notes", "important",
                 "budget", "decisión", "acuerdo", "nota"}:
        parts.append(("note_label", 4.0))
    if c.section and _NOTE_SECTION.search(c.section):
        parts.append(("note_section", 3.5))
    elif c.section and _FACT_SECTION.search(c.section):
        parts.append(("fact_section", 2.5))
    if _NOTE_CUE.search(c.text):
        parts.append(("note_cue", 3.0))
    elif _SETTLED.search(c.text):
        parts.append(("settled", SETTLED_W))
    if c.section and _SUMMARY_SECTION.search(c.section) and not _NOTE_SECTION.search(c.section):
        parts.append(("summary_section", SUMMARY_W))
    if _FIGURE.search(c.text):
        parts.append(("figure", 0.8))
    if _REQUEST.search(c.text) or _first_word(c.text) in IMPERATIVE_VERBS:
        parts.append(("actionable", -2.0))
    if _SOCIAL.match(c.text):
        parts.append(("social", -3.0))
    if c.shape == "checkbox":
        parts.append(("checkbox", -3.0))
    if c.text.rstrip().endswith("?"):
        parts.append(("question", -2.0))
    if len(c.text.split()) < 4:
        parts.append(("short", -1.0))
    return Evidence(sum(w for _, w in parts), tuple(parts))


def timeline_evidence(c: Candidate, has_date: bool) -> Evidence:
    parts: list[tuple[str, float]] = [("bias", -3.0)]
    if not has_date:
        return Evidence(-10.0, (("no_date", -10.0),))
    parts.append(("date", 1.5))
    if _MILESTONE.search(c.text):
        parts.append(("milestone_word", 2.5))
    if c.section and re.search(r"(milestone|timeline|schedule|plan|roadmap|dates|calendar|"
                               r"hitos|cronograma|fechas)", c.section, re.I):
        parts.append(("timeline_section", 2.0))
    if (c.label or "").lower() in _TIMELINE_COLUMNS:
        parts.append(("timeline_table", 3.0))  # a row of a milestone plan
    elif ((_first_word(c.text) in IMPERATIVE_VERBS and not listed_as_milestone(c))
          or _REQUEST.search(c.text)):
        parts.append(("actionable", -1.5))
    return Evidence(sum(w for _, w in parts), tuple(parts))


#: A table whose text column is headed like this lists events, not tasks.
_TIMELINE_COLUMNS = frozenset({"milestone", "milestones", "phase", "event", "events", "stage",
                               "hito", "hitos", "fase", "evento"})
#: Headings whose dated lines are milestones (unless they ask something of someone).
_TIMELINE_SECTIONS = frozenset({"milestone", "milestones", "key dates", "timeline", "timelines",
                                "hitos", "fechas clave"})


def listed_as_milestone(c: Candidate) -> bool:
    """Under a "Milestones" (or "Key dates", "Timeline") heading: a line that starts like a
    verb ("Design approval on 4 March") names an event there."""
    return (c.section or "").strip().lower() in _TIMELINE_SECTIONS


#: Nouns that name an event even though they can be verbs: "Launch on 2 June", "Review call".
_EVENT_NOUNS = frozenset({"launch", "release", "review", "demo", "delivery", "handover",
                          "kickoff", "kick-off", "deadline", "milestone", "sign-off", "signoff",
                          "go-live", "go", "shoot", "workshop", "presentation", "meeting",
                          "opening", "beta", "alpha", "event", "test", "print", "call",
                          "lanzamiento", "entrega", "reunión", "presentación"})
_OBJECT_AFTER = re.compile(rf"^\s*{_W}\s+(?:the|a|an|our|your|their|this|that|these|those|"
                           rf"it|them|him|her|me|us|el|la|los|las|un|una)\b", re.I)


#: "Jorge hará la sesión de fotos …", "Marta se encarga de …": someone will do it.
_WILL_DO = re.compile(r"^[A-ZÀ-Ý][\wÀ-ÿ'-]+\s+(?:se encarga|tiene que|debe|va a|"
                      r"[\wÀ-ÿ]+(?:ará|erá|irá))\b")


def is_milestone(c: Candidate) -> bool:
    """A dated event that asks nothing of anyone ("Launch target: 2 June", "Public launch",
    "Design sign-off"): no request, promise, assignment or checkbox, and no verb with an
    object ("Launch the site" is something to do)."""
    text = strip_connectors(c.text)
    if c.shape == "checkbox" or text.rstrip().endswith("?"):
        return False
    if c.shape == "cell" and (c.label or "").lower() in _TIMELINE_COLUMNS:
        return True  # a row of a milestone plan
    if (_REQUEST.search(text) or _DIRECT_REQUEST.match(text) or _FIRST_PERSON.search(text)
            or _COMMIT.search(text)):
        return False
    named = _NAMED_ASSIGN.match(text)
    if named is not None and named.group(2).lower() in IMPERATIVE_VERBS:
        return False
    if _WILL_DO.match(text):
        return False
    if listed_as_milestone(c):
        return True  # "Design approval on 4 December" under "Milestones" names an event
    first = _first_word(text)
    # "Launch on 2 June", "Design sign-off" are events; "Launch the site", "Send it" to do
    return not (first in IMPERATIVE_VERBS and (
        _OBJECT_AFTER.match(text) or not (first in _EVENT_NOUNS or _MILESTONE.search(text))))


#: Said in the past tense: what it dates has happened, whatever the document is.
_HAPPENED = re.compile(r"\b(?:went live|took place|happened|was|were)\b", re.I)
#: A participle: past in a report ("Charter signed 3 Mar"), a milestone's name in a plan
#: ("First selects delivered: 14 March").
_PARTICIPLE = re.compile(
    r"\b(?:signed|delivered|approved|completed?|done|finished|launched|held|shipped|released|"
    r"opened|closed|replaced|firmad[oa]|entregad[oa]|terminad[oa]|hecho)\b", re.I)
#: "to be signed", "planned", "due": the participle names something still to come.
_AHEAD = re.compile(r"\b(?:will|shall|to be|going to|planned|scheduled|expected|due|target)\b",
                    re.I)


def reports_past(c: Candidate, plan: bool = False) -> bool:
    """"Charter signed 3 Mar" in a report, "was signed on 3 March", a row marked done: what
    it dates has already happened. In a ``plan`` (a brief, a schedule) only a past tense or
    a done mark says so: its "delivered: 14 March" is a milestone still to come."""
    if c.checked or _HAPPENED.search(c.text):
        return True
    return not plan and bool(_PARTICIPLE.search(c.text)) and not _AHEAD.search(c.text)


_PLAN_TITLE = re.compile(r"\b(?:brief|plan|planning|proposal|roadmap|schedule|timeline|"
                         r"kick-?off|agenda|call sheet|propuesta|planificaci[óo]n|cronograma)\b",
                         re.I)
_REPORT_TITLE = re.compile(r"\b(?:report|retro(?:spective)?|status|recap|review|minutes|summary|"
                           r"post-?mortem|wrap-?up|informe|acta|resumen)\b", re.I)


def is_plan(title: str) -> bool:
    """A document titled as a brief, plan or schedule (and not as a report on one): its dates
    without a year are the coming ones."""
    return bool(_PLAN_TITLE.search(title)) and not _REPORT_TITLE.search(title)


#: Where one dated clause ends and the next begins: ", ", "; ", " and ".
_CLAUSE = re.compile(r"\s*[,;]\s+(?:and\s+)?|\s+and\s+", re.I)
_FILLER = frozenset({"and", "for", "on", "the", "from", "then", "also", "until", "till", "by",
                     "at", "y", "el", "para"})


def _has_words(text: str) -> bool:
    return any(w.lower() not in _FILLER for w in re.findall(r"[^\W\d_]{2,}", text))


def split_events(c: Candidate, found: list[tuple[int, int, str]]
                 ) -> list[tuple[Candidate, list[tuple[int, int, str]]]]:
    """"Submission is planned for 10 June, public launch for 17 June": one event per dated
    clause, each a span of the document with its own date and its own words; otherwise the
    candidate whole. ``found``: the date expressions in ``c.text`` (offsets in it)."""
    if len(found) < 2:
        return [(c, found)]
    bounds = [0]
    for (_, end, _), (start, _, _) in pairwise(found):
        m = _CLAUSE.search(c.text, end, start)
        if m is None:
            return [(c, found)]
        bounds += [m.start(), m.end()]
    bounds.append(len(c.text))
    parts = []
    for (a, b), (ds, de, expr) in zip(zip(bounds[::2], bounds[1::2], strict=True), found,
                                      strict=True):
        if not _has_words(c.text[a:ds] + " " + c.text[de:b]):
            return [(c, found)]  # "10 June, 17 June": dates of one thing
        part = replace(c, start=c.start + a, end=c.start + b, text=c.text[a:b])
        parts.append((part, [(ds - a, de - a, expr)]))
    return parts
