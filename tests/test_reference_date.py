"""Each document's own reference date (issue 14): where it comes from, what it resolves, and
where it is shown. Expected dates are written by hand from a calendar."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import pytest

from sidecar.extractors.base import ExtractedRecord, ExtractionRequest, Grounding
from sidecar.extractors.date_values import within_horizon
from sidecar.extractors.dates import resolve_date
from sidecar.extractors.rules import RulesExtractor
from sidecar.linking import item_meta
from sidecar.readers import read_bytes, read_document
from sidecar.readers.docdate import day_first_for, file_name_date
from sidecar.sources.base import SourceDocument, WorkItem

MAX = 1_000_000


def saved(tmp_path: Path, name: str, text: str, mtime: datetime | None = None) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        stamp = mtime.timestamp()
        os.utime(path, (stamp, stamp))
    return path


def day(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000).date().isoformat()


LATE = datetime(2026, 12, 5, 18, 0)  # the file was saved long after it was written


@pytest.mark.parametrize(("name", "text", "expected", "origin"), [
    ("a.md", "---\ntitle: Kickoff\ndate: 2026-03-10\n---\n# Kickoff\nSend the deck.\n",
     "2026-03-10", "front_matter"),
    ("b.md", "# Weekly sync\n\n**Date:** 3 March 2026, 15:00–16:00\n\nSend the deck.\n",
     "2026-03-03", "date_line"),
    ("c.txt", "Minutes\nFecha: miércoles, 9 de abril de 2025\nHay que pagar.\n",
     "2025-04-09", "date_line"),
    ("d.md", "# Kickoff — 2026-03-10\n\nSend the deck.\n", "2026-03-10", "title"),
    ("e.md", "# Reunión del 2 de abril de 2026\n\nHay que pagar la factura.\n", "2026-04-02",
     "title"),
    ("f.txt", "Discovery call – Lumen – Thu 24 April 2025, 10:30–11:15\nSend the deck.\n",
     "2025-04-24", "title"),
    ("2026-03-10-notes.md", "# Notes\n\nSend the deck.\n", "2026-03-10", "file_name"),
    ("notes-2026-04-02.md", "# Notes\n\nSend the deck.\n", "2026-04-02", "file_name"),
    ("20260310.txt", "Send the deck.\n", "2026-03-10", "file_name"),
    # a stated date beats the file name; a range or "from 3 October" is not the doc's date
    ("2020-01-01-x.md", "Date: 5 May 2026\n\nSend it.\n", "2026-05-05", "date_line"),
    ("g.md", "# Handover while I'm away (16–27 June)\n\nSend it.\n", "2026-12-05", "mtime"),
    ("h.md", "# Season 2\nReleased weekly on Fridays from 3 October.\n", "2026-12-05", "mtime"),
    ("i.csv", "Task,Due\nShip it,2025-03-05\n", "2026-12-05", "mtime"),
    ("typo.md", "Date: 3 March 2062\n\nSend it.\n", "2026-12-05", "mtime"),
    ("plan.md", "# Plan — 2027-01-11\n\nSend it.\n", "2027-01-11", "title"),
    # a chat export: written up to its last dated message or day heading
    ("chat.txt", "14/04/2026, 09:12 - Nadia: Morning!\n17/04/2026, 12:16 - Nadia: Thanks\n",
     "2026-04-17", "last_message"),
    ("log.md", "Export\n\n--- Monday 20 April 2026 ---\n[09:05] Ilse: hi\n"
     "--- Wednesday 22 April 2026 ---\n[09:45] Karin: done\n", "2026-04-22", "last_message"),
])
def test_reference_date_and_its_origin(tmp_path: Path, name: str, text: str, expected: str,
                                       origin: str) -> None:
    doc = read_document(saved(tmp_path, name, text, LATE), max_bytes=MAX)
    assert doc.date is not None and doc.date.tzinfo is not None
    assert (doc.date.date().isoformat(), doc.meta["date_origin"]) == (expected, origin)


def test_a_date_without_year_is_never_after_the_file_was_saved(tmp_path: Path) -> None:
    # "15 April" in a file saved on 1 February 2026 was written in April 2025
    doc = read_document(saved(tmp_path, "n.md", "Brainstorm\n\n15 April, Sam + Ben.\n",
                              datetime(2026, 2, 1, 12)), max_bytes=MAX)
    assert doc.date is not None and doc.date.date() == date(2025, 4, 15)
    # a weekday picks the year: 8 April was a Tuesday in 2025 (and 2031), not in 2026
    doc = read_document(saved(tmp_path, "m.md", "# Review\n\nTuesday 8 April. Sam + Marta.\n",
                              LATE), max_bytes=MAX)
    assert doc.date is not None and doc.date.date() == date(2025, 4, 8)


def test_email_date_is_the_reference_in_local_time(tmp_path: Path) -> None:
    raw = (b"From: A <a@x.org>\nSubject: Hi\nDate: Tue, 10 Mar 2026 23:30:00 -0800\n\n"
           b"Please send it tomorrow.\n")
    doc = read_document(saved(tmp_path, "m.eml", raw.decode(), LATE), max_bytes=MAX)
    assert doc.meta["date_origin"] == "email"
    assert doc.date == datetime(2026, 3, 11, 7, 30).astimezone()  # same instant, local zone
    assert doc.date is not None and doc.date.utcoffset() == datetime.now().astimezone().utcoffset()


def test_mtime_is_the_fallback_and_an_attachment_has_none(tmp_path: Path) -> None:
    doc = read_document(saved(tmp_path, "todo.txt", "Buy milk\nCall Bob\n",
                              datetime(2026, 6, 1, 8, 15)), max_bytes=MAX)
    assert doc.meta["date_origin"] == "mtime"
    assert doc.date == datetime(2026, 6, 1, 8, 15).astimezone()
    attachment = read_bytes(b"Buy milk\nCall Bob\n", name="todo.txt", max_bytes=MAX)
    assert attachment.date is None and "date_origin" not in attachment.meta
    dated = read_bytes(b"Date: 2 June 2026\nBuy milk\n", name="todo.txt", max_bytes=MAX)
    assert dated.date is not None and dated.date.date() == date(2026, 6, 2)


def test_file_name_dates() -> None:
    assert file_name_date("2026_03_10 notes.md") == date(2026, 3, 10)
    assert file_name_date("invoice-20260230.txt") is None  # no 30 February
    assert file_name_date("report-v2026.md") is None


async def extract(path: Path, *, project: str | None = None,
                  types: tuple[str, ...] = ("tasks",)) -> list[ExtractedRecord]:
    doc = read_document(path, max_bytes=MAX)
    result = await RulesExtractor().extract(ExtractionRequest(
        doc.text, data_types=types, document_date=doc.date,
        date_origin=doc.meta.get("date_origin"), label=path.name, project_id=project))
    return list(result.items)


async def test_due_dates_resolve_against_the_document_not_today(tmp_path: Path) -> None:
    notes = saved(tmp_path, "kickoff.md", "# Kickoff — 2026-03-10\n\n## Actions\n"
                  "- Tom to send the deck by 13 March\n- Ana to book the venue tomorrow\n"
                  "- Li to call the printer on Thu 16 Apr\n", LATE)
    items = {it.data["title"]: it for it in await extract(notes)}
    assert day(items["Tom to send the deck by 13 March"].data["dueDate"]) == "2026-03-13"
    assert day(items["Ana to book the venue tomorrow"].data["dueDate"]) == "2026-03-11"
    assert day(items["Li to call the printer on Thu 16 Apr"].data["dueDate"]) == "2026-04-16"
    ref = items["Tom to send the deck by 13 March"].reference
    assert ref is not None and ref["origin"] == "title" and ref["date"].startswith("2026-03-10")


async def test_each_chat_message_is_the_reference_for_its_own_tomorrow(tmp_path: Path) -> None:
    chat = saved(tmp_path, "chat.txt", (
        "14/04/2026, 09:20 - Ben: I'll check the colour profiles tomorrow\n"
        "16/04/2026, 08:42 - Ben: ok\n"
        "17/04/2026, 12:16 - Nadia: Please send me the final invoice tomorrow\n"), LATE)
    items = {it.data["title"]: it for it in await extract(chat)}
    first = items["I'll check the colour profiles tomorrow"]
    assert day(first.data["dueDate"]) == "2026-04-15"
    assert first.reference == {"date": datetime(2026, 4, 14, 9, 20).astimezone().isoformat(
        timespec="minutes"), "origin": "message"}
    assert day(items["Please send me the final invoice tomorrow"].data["dueDate"]) == \
        "2026-04-18"
    heading = saved(tmp_path, "slack.txt", (
        "Export\n\n--- Monday 20 April 2026 ---\n[09:11] Tom: I'll run the suite today\n"
        "--- Tuesday 21 April 2026 ---\n[10:16] Ilse: Karin, please write the notes tomorrow\n"),
        LATE)
    items = {it.data["title"]: it for it in await extract(heading)}
    assert day(items["I'll run the suite today"].data["dueDate"]) == "2026-04-20"
    assert day(items["Karin, please write the notes tomorrow"].data["dueDate"]) == "2026-04-22"


async def test_a_date_outside_the_documents_horizon_is_dropped(tmp_path: Path) -> None:
    doc = saved(tmp_path, "type.md", (
        "# Typography notes — 2026-03-10\n\n## Actions\n"
        "- Ana to scan the Caslon specimen from March 1898\n"
        "- Tom to renew the licence by 3 March 2031\n"
        "- Li to send the proofs by 20 March 2026\n"), LATE)
    items = {it.data["title"]: it for it in await extract(doc)}
    assert "dueDate" not in items["Ana to scan the Caslon specimen from March 1898"].data
    assert "dueDate" not in items["Tom to renew the licence by 3 March 2031"].data
    assert day(items["Li to send the proofs by 20 March 2026"].data["dueDate"]) == "2026-03-20"
    ref = datetime(2026, 3, 10, 9).astimezone()
    assert within_horizon(round(datetime(2027, 3, 10).timestamp() * 1000), ref)
    assert not within_horizon(round(datetime(2025, 3, 1).timestamp() * 1000), ref)
    assert not within_horizon(round(datetime(2029, 4, 1).timestamp() * 1000), ref)


def test_day_month_order_from_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_ALL", "C")
    # its other numeric dates: 25/02 can only be day-first, 04/13 only month-first
    assert day_first_for("Sample by 25/02/2026. Recording: 06/03/2026.") is True
    assert day_first_for("Kickoff 04/13/2026, review 05/04/2026.") is False
    # a 24-hour chat stamp beside a numeric date (WhatsApp outside the US)
    assert day_first_for("03/04/2025, 18:22 - Lucia: hi") is True
    # the language: Spanish, French, German … write day-first
    assert day_first_for("Necesito que me mandes la maqueta de la carta antes del 10/06/2026, "
                         "porque la imprenta cierra por vacaciones en el mes de junio.") is True
    assert day_first_for("Pouvez-vous nous envoyer la maquette avant le 03/07/2026 ? Nous "
                         "sommes d'accord sur le format et le papier pour la collection.") is True
    english = "Please send the deck to the client and the printer with the notes for 03/04/2026."
    assert day_first_for(english) is None  # no evidence: month/day, the US reading
    monkeypatch.setenv("LC_ALL", "en_GB.UTF-8")
    assert day_first_for(english) is True
    monkeypatch.setenv("LC_ALL", "en_US.UTF-8")
    assert day_first_for(english) is False
    ref = datetime(2026, 3, 1, 9).astimezone()
    assert day(resolve_date("03/04/2026", ref, day_first=True)) == "2026-04-03"
    assert day(resolve_date("03/04/2026", ref)) == "2026-03-04"
    assert day(resolve_date("25/04/2026", ref, day_first=False)) == "2026-04-25"


async def test_spanish_email_reads_its_numeric_dates_day_first(tmp_path: Path) -> None:
    raw = ("From: Lucía <l@x.es>\nSubject: Carta\nDate: Wed, 03 Jun 2026 18:02:40 +0200\n\n"
           "Hola Pablo:\n\nNecesito que me mandes la maqueta de la carta nueva antes del "
           "10/06/2026, porque la imprenta cierra por vacaciones.\n\nUn saludo,\nLucía\n")
    items = await extract(saved(tmp_path, "carta.eml", raw, LATE))
    task = next(it for it in items if "maqueta" in str(it.data["title"]))
    assert day(task.data["dueDate"]) == "2026-06-10"  # 10 June, not 6 October


def test_record_source_metadata_carries_the_reference_and_its_origin() -> None:
    when = datetime(2026, 3, 10, 9).astimezone()
    doc = SourceDocument(WorkItem("/d/kickoff.md", "/d/kickoff.md"), "text", "h", date=when,
                         meta={"path": "/d/kickoff.md", "date_origin": "title"})
    engine_says = {"date": when.isoformat(timespec="minutes"), "origin": "document"}
    item = ExtractedRecord("tasks", {"title": "x"}, Grounding((0, 1)), 0.9, engine_says)
    assert item_meta(doc, item)["source"]["reference"] == {
        "date": when.isoformat(timespec="minutes"), "origin": "title"}
    chat = ExtractedRecord("tasks", {"title": "x"}, Grounding((0, 1)), 0.9,
                         {"date": "2026-04-14T09:20+00:00", "origin": "message"})
    assert item_meta(doc, chat)["source"]["reference"]["origin"] == "message"
    mail = SourceDocument(WorkItem("m1", "Subject"), "text", "h", date=when, kind="eml")
    assert item_meta(mail, item)["source"]["reference"]["origin"] == "email"


async def test_no_document_date_means_now_and_says_so() -> None:
    result = await RulesExtractor().extract(ExtractionRequest(
        "- Tom to send the deck tomorrow\n", data_types=("tasks",)))
    (item,) = result.items
    assert item.reference is not None and item.reference["origin"] == "now"
    assert day(item.data["dueDate"]) == (date.today().fromordinal(
        date.today().toordinal() + 1)).isoformat()


async def test_a_first_run_does_not_flood_the_queue_with_stale_work() -> None:
    from sidecar.extractors.postprocess import stale_before

    now = datetime(2026, 12, 5, 10).astimezone()
    window = stale_before(now, 30, first_run=True)
    assert window == datetime(2026, 11, 5, 10).astimezone()
    assert stale_before(now, 30, first_run=False) is None
    assert stale_before(now, 0, first_run=True) is None

    doc = ("# Sync\n\n## Decisions\n- Decision: the blue logo stays.\n\n## Key dates\n"
           "- Launch target: 20 December 2026\n\n## Actions\n"
           "- Tom to send the deck by 1 September 2026\n"
           "- Ana to book the venue by 1 December 2026\n"
           "- Li to call the printer\n")

    async def run(reference: datetime, stale: datetime | None) -> dict[str, list[str]]:
        result = await RulesExtractor().extract(ExtractionRequest(
            doc, data_types=("tasks", "notes", "timelines"), document_date=reference,
            project_id="p1", stale_before=stale))
        out: dict[str, list[str]] = {}
        for it in result.items:
            out.setdefault(it.table, []).append(str(it.data["title"]))
        return out

    fresh = datetime(2026, 11, 20, 9).astimezone()
    everything = await run(fresh, None)
    assert len(everything["tasks"]) == 3 and everything["timelines"] and everything["notes"]
    # a fresh document on a first run: the task due in September is stale, the rest stays
    first = await run(fresh, window)
    assert first["tasks"] == ["Ana to book the venue by 1 December 2026", "Li to call the printer"]
    assert first["timelines"] == everything["timelines"] and first["notes"]
    # an old document on a first run: indexed, its summary kept, no tasks or timelines
    old = await run(datetime(2026, 1, 10, 9).astimezone(), window)
    assert set(old) == {"notes"}


def test_an_mtime_in_the_future_is_not_a_reference(tmp_path: Path) -> None:
    path = saved(tmp_path, "todo.txt", "Buy milk\nCall Bob\n")
    os.utime(path, (4_102_444_800, 4_102_444_800))  # 2100-01-01: a wrong clock
    doc = read_document(path, max_bytes=MAX)
    assert doc.date is None and "date_origin" not in doc.meta  # the engine uses now
    zip_epoch = datetime(1980, 1, 1).timestamp()  # what unzipped files often carry
    os.utime(path, (zip_epoch, zip_epoch))
    assert read_document(path, max_bytes=MAX).date is None
    os.utime(path, (0, 0))
    assert read_document(path, max_bytes=MAX).date is None
    old = datetime(1999, 5, 1, 12).timestamp()  # old, but a real date
    os.utime(path, (old, old))
    assert read_document(path, max_bytes=MAX).meta["date_origin"] == "mtime"


def test_every_engine_s_dates_pass_the_horizon_and_timelines_are_held() -> None:
    """A model (generative, remote) may write any date: finalize checks them all."""
    from sidecar.extractors.base import ExtractionProblem
    from sidecar.extractors.postprocess import finalize

    ref = datetime(2026, 3, 10, 9).astimezone()
    raw = [ExtractedRecord("tasks", {"title": "Scan the 1898 specimen", "dueDate": "1898-03-01"},
                         Grounding(None)),
           ExtractedRecord("tasks", {"title": "Send proofs", "dueDate": "2026-03-20"},
                         Grounding(None)),
           ExtractedRecord("timelines", {"title": "Foundry opens", "date": "1898-05-01"},
                         Grounding(None)),
           ExtractedRecord("timelines", {"title": "Launch", "date": "2026-06-02"},
                         Grounding(None))]
    problems: list[ExtractionProblem] = []
    request = ExtractionRequest("x", data_types=("tasks", "timelines"), document_date=ref,
                                date_origin="date_line", project_id="p")
    out = {str(it.data["title"]): it for it in finalize(raw, request, ref, problems)}
    assert "dueDate" not in out["Scan the 1898 specimen"].data
    assert day(out["Send proofs"].data["dueDate"]) == "2026-03-20"
    assert set(out) == {"Scan the 1898 specimen", "Send proofs", "Launch"}
    assert out["Launch"].reference == {"date": ref.isoformat(timespec="minutes"),
                                       "origin": "date_line"}
    held: list[ExtractionProblem] = []
    no_project = ExtractionRequest("x", data_types=("tasks", "timelines"), document_date=ref)
    kept = finalize(raw, no_project, ref, held)
    assert [it.table for it in kept] == ["tasks", "tasks"]
    assert [p.message for p in held] == [  # the 1898 one is not held: it is no date of theirs
        "1 timeline held: no project (set the agent's project to receive them): Launch"]
