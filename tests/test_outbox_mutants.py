"""The outbox, edge by edge (issue 19): key formats, retry backoff and its due times on both
sides of each bound, per-run counts, delivered marks and legacy keys. Hashes were taken with
``sha256sum`` by hand; no expected value comes from the code under test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.store import Store
from sidecar.store.outbox import (
    NewEntry,
    Settled,
    call_id_for,
    idempotency_key,
    legacy_key,
    normalised_title,
    retry_delay,
    stable_key,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "s.db") as s:
        yield s


def item(n: int, run_id: str | None, *, agent: str = "a1", table: str = "tasks",
         key: str | None = None, meta: dict | None = None) -> NewEntry:
    return NewEntry(idempotency_key=key or f"{agent}:k{n}", agent_id=agent, run_id=run_id,
                   table=table, data={"title": f"T{n}"},
                   meta={"source": {"path": f"/d/{n}.md"}} if meta is None else meta)


# -- keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("failures", "seconds"), [
    (-3, 1.0), (0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0),
    (65, 300.0), (10_000, 300.0)])
def test_retry_delay_doubles_from_one_second_up_to_five_minutes(failures: int,
                                                                seconds: float) -> None:
    assert retry_delay(failures) == seconds


def test_retry_delay_with_its_own_base_and_cap() -> None:
    assert retry_delay(3, base=0.5, cap=10.0) == 2.0
    assert retry_delay(6, base=0.5, cap=10.0) == 10.0


def test_call_id_is_c_and_24_hex_of_the_key() -> None:
    assert call_id_for("a1:/d/x.md:tasks:t1") == "c_878465349e73e0379ddeb6ab"


def test_idempotency_key_hashes_long_parts_and_colons() -> None:
    assert idempotency_key("a1", "x:y", "y" * 25, "y" * 24, 7) == (
        "a1:1274e286686b54fe:329188efa21f89b7:" + "y" * 24 + ":7")


@pytest.mark.parametrize(("data", "expected"), [
    ({"title": "  Send   the Logo. "}, "send the logo"),
    ({"title": "(*Done*)"}, "done"),
    ({"title": "—Launch…"}, "launch"),
    ({"title": "\"'`[x]`'\""}, "x"),
    ({"title": "a - b"}, "a - b"),
    ({"name": "Straße"}, "strasse"),
    ({"title": "", "name": "N"}, "n"),
    ({"content": "\ufb01le"}, "file"),   # the "fi" ligature: NFKC
    ({}, ""),
])
def test_normalised_title(data: dict, expected: str) -> None:
    assert normalised_title(data) == expected


def test_stable_key_format() -> None:
    assert stable_key("src", "tasks", {"title": "Send the LOGO."}) == (
        "k2:src:tasks:0158698ab2f31861")
    assert stable_key("src", "projects", {"name": "Straße"}) == (
        "k2:src:projects:16d96952087774fe")


def test_legacy_key_format() -> None:
    # lower case and collapsed spaces only: the old rule kept the full stop
    assert legacy_key("a1", "/d/x.md", "tasks", {"title": " Send  THE logo. "}) == (
        "a1:/d/x.md:tasks:7a7bdf8f95585f46")


# -- legacy keys at enqueue ---------------------------------------------------------------

async def test_a_record_queued_under_its_legacy_key_is_not_queued_again(store: Store) -> None:
    ob = store.outbox
    data = {"title": "Send the logo."}
    old = legacy_key("a1", "/d/x.md", "tasks", data)
    assert await ob.enqueue([NewEntry(old, "a1", None, "tasks", data, {})]) == 1
    new = NewEntry(stable_key("src", "tasks", data), "a1", None, "tasks", data,
                  {"source": {"key": "/d/x.md"}})
    other = NewEntry(stable_key("src", "tasks", {"title": "Other"}), "a1", None, "tasks",
                    {"title": "Other"}, {"source": {"key": "/d/x.md"}})
    assert await ob.enqueue([new, other]) == 1
    assert [e.data["title"] for e in await ob.pending_after(0)] == ["Send the logo.", "Other"]


async def test_without_a_legacy_key_everything_is_queued(store: Store) -> None:
    ob = store.outbox
    data = {"title": "Send the logo."}
    same = legacy_key("a1", "/d/x.md", "tasks", data)
    items = [
        NewEntry(same, "a1", None, "tasks", data, {"source": {"key": "/d/x.md"}}),  # own key
        NewEntry("a1:n2", "a1", None, "tasks", {"title": "B"}, {"source": {"key": 7}}),
        NewEntry("a1:n3", "a1", None, "tasks", {"title": "C"}, {"source": "x"}),
        NewEntry("a1:n4", "a1", None, "tasks", {"title": "D"}, {}),
    ]
    assert await ob.enqueue(items) == 4
    assert await ob.enqueue(items) == 0


async def test_many_legacy_keys_are_looked_up_in_parts(store: Store) -> None:
    ob = store.outbox
    olds = [NewEntry(legacy_key("a1", "/d/x.md", "tasks", {"title": f"t{n}"}), "a1", None,
                    "tasks", {"title": f"t{n}"}, {}) for n in range(1200)]
    assert await ob.enqueue(olds) == 1200
    news = [NewEntry(f"k2:n{n}", "a1", None, "tasks", {"title": f"t{n}"},
                    {"source": {"key": "/d/x.md"}}) for n in range(1201)]
    assert await ob.enqueue(news) == 1  # only t1200 was never queued
    assert await ob.count() == 1201


# -- read-back limits -----------------------------------------------------------------------

async def test_pending_after_reads_500_by_default(store: Store) -> None:
    ob = store.outbox
    assert await ob.enqueue([item(n, None) for n in range(502)]) == 502
    got = await ob.pending_after(0)
    assert len(got) == 500 and [e.data["title"] for e in got[:2]] == ["T0", "T1"]
    assert len(await ob.pending_after(got[-1].seq)) == 2


# -- retryable errors ---------------------------------------------------------------------

async def test_a_retryable_error_waits_then_falls_due(store: Store) -> None:
    ob = store.outbox
    run = await store.runs.start("a1", "local", "manual")
    await ob.enqueue([item(1, run["id"]), item(2, run["id"])])
    e1, e2 = await ob.pending_after(0)
    before = time.time()
    applied = await ob.settle([Settled(e1.call_id, "database is locked", retryable=True),
                               Settled(e2.call_id, None, retryable=True)])  # no error: an ack
    after = time.time()
    assert sorted(applied) == sorted([e1.call_id, e2.call_id])
    assert list(applied.retry_at) == [e1.call_id]
    due = applied.retry_at[e1.call_id]
    assert before + 1.0 <= due <= after + 1.0  # first failure: 1 s
    assert applied.runs == {run["id"]}  # the ack credits its run; the retry does not yet
    assert await ob.by_call_id(e2.call_id) == (e2.seq, "acked")
    assert await ob.by_call_id(e1.call_id) == (e1.seq, "pending")
    # waiting: not in the normal queue, not due before its time, due at it
    assert await ob.pending_after(0) == []
    assert await ob.due_retries(due - 0.001) == []
    assert [e.call_id for e in await ob.due_retries(due)] == [e1.call_id]
    assert await ob.next_retry_at(due - 0.001) == due
    assert await ob.next_retry_at(due) is None
    assert await ob.count_waiting(due - 0.001) == 1
    assert await ob.count_waiting(due) == 0
    assert await ob.count_waiting(due - 0.001, run["id"]) == 1
    assert await ob.count_waiting(due - 0.001, "r_other") == 0
    assert (await store.runs.get(run["id"]))["items_created"] == 1  # type: ignore[index]
    # second failure: 2 s; then an ack counts it
    again = await ob.settle([Settled(e1.call_id, "database is locked", retryable=True)])
    assert 2.0 <= again.retry_at[e1.call_id] - after <= 2.0 + (time.time() - before)
    row = await store.db.fetchone("SELECT attempts, last_error FROM outbox WHERE call_id = ?",
                                  (e1.call_id,))
    assert (row["attempts"], row["last_error"]) == (2, "database is locked")
    done = await ob.settle([Settled(e1.call_id)])
    assert list(done) == [e1.call_id] and done.runs == {run["id"]} and done.retry_at == {}
    assert (await store.runs.get(run["id"]))["items_created"] == 2  # type: ignore[index]
    assert await ob.next_retry_at(0) is None


async def test_due_retries_are_oldest_first_and_limited(store: Store) -> None:
    ob = store.outbox
    await ob.enqueue([item(n, None) for n in range(515)])
    entries = await ob.pending_after(0, limit=1000)
    await ob.settle([Settled(e.call_id, "busy", retryable=True) for e in entries])
    later = time.time() + 10
    due = await ob.due_retries(later)
    assert [e.seq for e in due] == [e.seq for e in entries[:512]]
    assert len(await ob.due_retries(later, limit=3)) == 3


# -- per-run counts and delivered marks ----------------------------------------------------

async def test_run_counts(store: Store) -> None:
    ob = store.outbox
    r1 = (await store.runs.start("a1", "local", "manual"))["id"]
    r2 = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(n, r1) for n in range(4)] + [item(9, r2)])
    e = await ob.pending_after(0)
    await ob.settle([Settled(e[0].call_id), Settled(e[1].call_id),
                     Settled(e[2].call_id, "bad row")])
    counts = await ob.run_counts([r1, r2, r1, "r_none"])
    assert counts == {
        r1: {"extracted": 4, "delivered": 2, "failed": 1, "pending": 1},
        r2: {"extracted": 1, "delivered": 0, "failed": 0, "pending": 1},
        "r_none": {"extracted": 0, "delivered": 0, "failed": 0, "pending": 0}}
    assert await ob.run_counts([]) == {}


async def test_run_counts_for_more_runs_than_one_query_takes(store: Store) -> None:
    ob = store.outbox
    ids = [f"r_{n}" for n in range(1001)]
    await ob.enqueue([item(n, r) for n, r in enumerate(ids)])
    counts = await ob.run_counts(ids)
    assert len(counts) == 1001
    assert all(c == {"extracted": 1, "delivered": 0, "failed": 0, "pending": 1}
               for c in counts.values())


async def test_mark_delivered_once_a_closed_run_has_nothing_pending(store: Store) -> None:
    ob = store.outbox
    run = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(1, run), item(2, run)])
    e1, e2 = await ob.pending_after(0)
    await ob.settle([Settled(e1.call_id)])
    assert await ob.mark_delivered(run) is None  # still running
    await store.runs.complete(run, documents=2, errors=[])
    assert await ob.mark_delivered(run) is None  # one still pending
    await ob.settle([Settled(e2.call_id, "no such table")])
    marked = await ob.mark_delivered(run)
    assert marked is not None
    assert (marked["id"], marked["extracted"], marked["delivered"], marked["failed"],
            marked["pending"]) == (run, 2, 1, 1, 0)
    assert marked["errors"] == ["Insert failed (tasks, '/d/2.md'): no such table"]
    assert marked["status"] == "partial" and marked["delivered_at"]
    assert await ob.mark_delivered(run) is None  # marked before
    assert await ob.mark_delivered("r_none") is None


async def test_mark_settled_runs_at_start_up(store: Store) -> None:
    ob = store.outbox
    closed = (await store.runs.start("a1", "local", "manual"))["id"]
    waiting = (await store.runs.start("a1", "local", "manual"))["id"]
    running = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(1, waiting)])
    await store.runs.complete(closed, documents=0, errors=[])
    await store.runs.complete(waiting, documents=1, errors=[])
    assert await ob.mark_settled_runs() == 1
    rows = {r["id"]: r for r in await store.db.fetchall("SELECT * FROM runs")}
    assert rows[closed]["delivered_at"] == rows[closed]["completed_at"]
    assert rows[waiting]["delivered_at"] is None and rows[running]["delivered_at"] is None
    assert await ob.mark_settled_runs() == 0


# -- crediting runs -----------------------------------------------------------------------

async def test_an_ack_for_a_run_that_is_gone_is_still_applied(store: Store) -> None:
    ob = store.outbox
    await ob.enqueue([item(1, "r_gone")])
    (e,) = await ob.pending_after(0)
    applied = await ob.settle([Settled(e.call_id)])
    assert list(applied) == [e.call_id] and applied.runs == {"r_gone"}
    assert await ob.count("acked") == 1


async def test_failures_of_a_finished_run_set_its_status_by_the_seeds_rule(
        store: Store) -> None:
    ob = store.outbox
    run = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(1, run), item(2, run), item(3, run, meta={})])
    e1, e2, e3 = await ob.pending_after(0)
    await store.runs.complete(run, documents=3, errors=[])
    await ob.settle([Settled(e1.call_id, "boom"), Settled(e3.call_id, "bang")])
    got = await store.runs.get(run)
    assert got is not None and (got["status"], got["items_created"]) == ("error", 0)
    # one batch: in the order SQLite reads the rows back (by call id), not the acks' order
    assert sorted(got["errors"]) == ["Insert failed (tasks, '/d/1.md'): boom",
                                     "Insert failed (tasks, '?'): bang"]
    await ob.settle([Settled(e2.call_id)])
    got = await store.runs.get(run)
    assert got is not None and (got["status"], got["items_created"]) == ("partial", 1)
    assert len(got["errors"]) == 2


async def test_entries_read_back_whole(store: Store) -> None:
    ob = store.outbox
    await ob.enqueue([NewEntry("a1:x", "a1", "r_1", "notes", {"title": "Ünïcode"},
                              {"source": {"path": "/d/é.md"}})])
    (e,) = await ob.for_run("r_1")
    assert (e.call_id, e.idempotency_key, e.agent_id, e.run_id, e.table, e.data, e.meta) == (
        call_id_for("a1:x"), "a1:x", "a1", "r_1", "notes", {"title": "Ünïcode"},
        {"source": {"path": "/d/é.md"}})
    raw = await store.db.fetchone("SELECT data, meta FROM outbox")
    assert "Ünïcode" in raw["data"] and "é" in raw["meta"]  # stored as text, not \\u escapes


# -- more edges ----------------------------------------------------------------------------

def test_retry_delay_never_overflows_however_many_failures() -> None:
    """The exponent stops at 64: 2.0 ** 10**6 would raise OverflowError."""
    assert retry_delay(10**6, cap=float("inf")) == 2.0 ** 64


async def test_counts_of_nothing_are_zero(store: Store) -> None:
    ob = store.outbox
    assert await ob.count() == 0 and await ob.count("failed") == 0
    assert await ob.count("pending", "r_none") == 0
    assert await ob.count_waiting(0.0) == 0 and await ob.count_waiting(0.0, "r_none") == 0
    await ob.enqueue([item(1, None)])
    assert await ob.count() == 1 and await ob.count("acked") == 0


async def test_an_item_whose_meta_is_not_an_object_is_still_queued(store: Store) -> None:
    ob = store.outbox
    odd = NewEntry("a1:odd", "a1", None, "tasks", {"title": "Odd"}, None)  # type: ignore[arg-type]
    listed = NewEntry("a1:list", "a1", None, "tasks", {"title": "L"}, ["x"])  # type: ignore[arg-type]
    assert await ob.enqueue([odd, listed]) == 2


async def test_records_of_no_run_anywhere_in_a_batch_leave_the_others_settled(
        store: Store) -> None:
    ob = store.outbox
    run = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(n, run if n % 2 else None) for n in range(12)])
    entries = await ob.pending_after(0)
    applied = await ob.settle([Settled(e.call_id) for e in entries])
    assert len(applied) == 12 and applied.runs == {run}
    assert await ob.count("acked") == 12
    got = await store.runs.get(run)
    assert got is not None and got["items_created"] == 6


async def test_run_errors_are_stored_as_readable_text(store: Store) -> None:
    ob = store.outbox
    run = (await store.runs.start("a1", "local", "manual"))["id"]
    await ob.enqueue([item(1, run, meta={"source": {"path": "/d/Müller.md"}})])
    (e,) = await ob.pending_after(0)
    await ob.settle([Settled(e.call_id, "zu groß")])
    raw = await store.db.fetchone("SELECT errors FROM runs WHERE id = ?", (run,))
    assert raw["errors"] == '["Insert failed (tasks, \'/d/Müller.md\'): zu groß"]'
