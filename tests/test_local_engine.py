"""The embedded model really takes part: its yes/no scores move, prefixes are reused, it unloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.extractors.candidates import find_candidates
from sidecar.extractors.judge import ModelJudge
from sidecar.extractors.llama_runtime import LlamaRuntime
from sidecar.model_files import load_manifest, resolve

TEXT = ("- Send the invoice to Dana by Friday\n- Thanks everyone for coming\n"
        "- The weather was nice\n")


async def test_judge_scores_come_from_the_model(local_engine) -> None:  # type: ignore[no-untyped-def]
    judge = ModelJudge(local_engine.runtime)
    cands = find_candidates(TEXT)
    scores = await judge("tasks", cands, "Meeting notes")
    assert len(scores) == 3 and len(set(scores)) == 3, scores  # real logits, not a constant
    assert all(-30 < s < 30 for s in scores)
    task, thanks, weather = scores
    assert task > thanks and task > weather, scores


async def test_prefix_is_reused_across_spans(local_engine) -> None:  # type: ignore[no-untyped-def]
    rt = local_engine.runtime
    judge = ModelJudge(rt)
    before = (rt.tokens_evaluated, rt.tokens_reused)
    await judge("tasks", find_candidates(TEXT), "Meeting notes")
    evaluated, reused = rt.tokens_evaluated - before[0], rt.tokens_reused - before[1]
    assert reused > 2 * evaluated, (evaluated, reused)


async def test_idle_unload_and_reload(model_dir: Path, default_model: Path) -> None:
    model = resolve(load_manifest().default, model_dir)
    rt = LlamaRuntime(model, threads=1, n_ctx=512, idle_unload_seconds=0.3)
    try:
        assert not rt.loaded  # lazy: nothing loaded until first use
        await rt.call(lambda llm: llm.n_vocab())
        assert rt.loaded
        for _ in range(40):
            await asyncio.sleep(0.1)
            if not rt.loaded:
                break
        assert not rt.loaded, "idle model was not unloaded"
        await rt.call(lambda llm: llm.n_vocab())
        assert rt.loaded and rt.loads == 2
    finally:
        await rt.close()


async def test_missing_and_corrupt_models_name_the_path_and_hash(tmp_path: Path) -> None:
    from sidecar.errors import ModelError

    missing = resolve(load_manifest().default, tmp_path)
    rt = LlamaRuntime(missing, threads=1)
    with pytest.raises(ModelError) as err:
        await rt.call(lambda llm: None)
    assert str(missing.path) in err.value.message and missing.spec.sha256 in err.value.message
    await rt.close()
    missing.path.write_bytes(b"GGUF" + b"\0" * 100)
    rt = LlamaRuntime(missing, threads=1)
    with pytest.raises(ModelError, match="corrupt or incomplete"):
        await rt.call(lambda llm: None)
    await rt.close()
    other = tmp_path / "notes.gguf"
    other.write_text("not a model")
    rt = LlamaRuntime(resolve(str(other), tmp_path), threads=1)
    with pytest.raises(ModelError, match="not a GGUF"):
        await rt.call(lambda llm: None)
    await rt.close()


async def test_any_gguf_by_path(default_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "my model.gguf"
    copy.symlink_to(default_model)
    rt = LlamaRuntime(resolve(str(copy), tmp_path), threads=1, n_ctx=512)
    try:
        assert await rt.call(lambda llm: llm.n_vocab()) > 1000
    finally:
        await rt.close()


UNSURE = ("# Weekly sync\n- [ ] Maria to send the revised quote by Friday\n"
          "- Follow up on the catering options\n- Ask Tom about the guest list\n")


def _request(text: str = UNSURE):  # type: ignore[no-untyped-def]
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sidecar.extractors.base import ExtractionRequest

    return ExtractionRequest(text=text, data_types=("tasks",),
                             document_date=datetime(2026, 11, 25, 9, tzinfo=ZoneInfo("UTC")))


async def test_the_judge_is_asked_and_its_answer_counts(local_engine) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from sidecar.extractors.extractive import Tuning
    from sidecar.extractors.local import LocalExtractor
    from sidecar.extractors.rules import RulesExtractor

    judged = LocalExtractor(local_engine.runtime, strategy="extractive",
                            tuning=replace(Tuning(), model_weight=0.6))
    with_model = await judged.extract(_request())
    without = await RulesExtractor().extract(_request())
    assert with_model.stats["model_calls"] >= 2, with_model.stats  # the unsure lines
    assert with_model.stats["tokens_evaluated"] > 0
    conf = {i.data["title"]: i.confidence for i in with_model.items}
    base = {i.data["title"]: i.confidence for i in without.items}
    moved = [t for t in conf.keys() & base.keys() if abs(conf[t] - base[t]) > 1e-6]
    assert moved, (conf, base)  # the model's yes/no changed the asked spans' confidence


async def test_an_unusable_model_fails_the_engines_that_need_it(tmp_path: Path) -> None:
    """A model that cannot run must fail an extraction that needs it, never return quietly."""
    from dataclasses import replace

    from sidecar.errors import ModelError
    from sidecar.extractors.extractive import Tuning
    from sidecar.extractors.local import LocalExtractor

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a GGUF header and nothing else
    rt = LlamaRuntime(resolve(str(broken), tmp_path), threads=1, n_ctx=512)
    try:
        judged = LocalExtractor(rt, strategy="extractive",
                                tuning=replace(Tuning(), model_weight=0.6))
        with pytest.raises(ModelError):
            await judged.extract(_request())
        with pytest.raises(ModelError):
            await LocalExtractor(rt, strategy="generative").extract(_request())
        # weight 0 (the shipped default for the 135M model) never asks, so it still works
        unasked = LocalExtractor(rt, strategy="extractive",
                                 tuning=replace(Tuning(), model_weight=0.0))
        result = await unasked.extract(_request())
        assert result.items and result.stats["model_calls"] == 0 and not rt.loaded
    finally:
        await rt.close()


async def test_cancelling_a_judged_extraction_stops_asking_the_model(local_engine) -> None:  # type: ignore[no-untyped-def]
    """The pipeline runs on a worker thread: a cancel (twice, as a user clicking) must still
    stop its model calls, and the runtime stays usable."""
    from dataclasses import replace

    from sidecar.extractors.extractive import Tuning
    from sidecar.extractors.local import LocalExtractor

    rt = local_engine.runtime
    judged = LocalExtractor(rt, strategy="extractive", tuning=replace(Tuning(), model_weight=0.6))
    text = "# Open points\n" + "".join(f"- Follow up on the catering option {i}\n"
                                       for i in range(200))
    before = rt.tokens_evaluated
    task = asyncio.create_task(judged.extract(_request(text)))
    for _ in range(600):
        await asyncio.sleep(0.1)
        if rt.tokens_evaluated > before:
            break
    assert rt.tokens_evaluated > before, "the model was never asked: nothing to cancel"
    task.cancel()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # a batch already on the model thread (8 spans) may finish; after it, nothing more: the
    # ~190 spans left would keep the count moving for minutes
    last, still_since, deadline = rt.tokens_evaluated, 0.0, 60.0
    while still_since < 4.0 and deadline > 0:
        await asyncio.sleep(0.5)
        deadline -= 0.5
        still_since = still_since + 0.5 if rt.tokens_evaluated == last else 0.0
        last = rt.tokens_evaluated
    assert still_since >= 4.0, "model calls went on after the cancel"
    asked = (await judged.extract(_request())).stats["model_calls"]
    assert asked >= 2  # the runtime still answers


@pytest.mark.parametrize("strategy", ["generative", "hybrid"])
async def test_a_cancelled_generation_stops_at_its_next_token(local_engine, strategy: str  # type: ignore[no-untyped-def]
                                                              ) -> None:
    """Cancel pressed while the model writes: the answer nobody waits for stops at once, so
    'run now' right after (or shutting down) does not queue behind up to 768 tokens of it."""
    from sidecar.extractors.local import LocalExtractor

    rt = local_engine.runtime
    engine = LocalExtractor(rt, strategy=strategy)
    text = "# Open points\n" + "".join(f"- Maria to follow up on the catering option {i} by "
                                       f"Friday\n" for i in range(60))
    before = rt.tokens_sampled
    task = asyncio.create_task(engine.extract(_request(text)))
    for _ in range(1200):
        await asyncio.sleep(0.05)
        if rt.tokens_sampled >= before + 5:
            break
    assert rt.tokens_sampled >= before + 5, "the model never wrote: nothing to cancel"
    task.cancel()
    task.cancel()  # twice, as a user clicking
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = rt.tokens_sampled
    await rt.call(lambda llm: None)  # served once the abandoned generation has let go
    # one token may be in sampling when the cancel lands; an unstopped answer goes on for
    # hundreds (the loop guard aside, up to 320 for a reading and 768 for JSON)
    assert rt.tokens_sampled - at_cancel <= 2, (at_cancel, rt.tokens_sampled)
    assert (await engine.extract(_request())).items  # and the runtime still answers
