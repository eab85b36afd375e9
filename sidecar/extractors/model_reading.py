"""The hybrid engine's one pass over a document: the model lists its tasks, milestones and notes.

One completion per document (per chunk of a long one), laid out as three short lists of the
document's own words, generated without a grammar (grammar sampling over a 150k vocabulary
cost the 1.5B model two thirds of its speed) and parsed leniently: whatever it writes is only
used once it is found in the document (grounded). The system prompt and the worked example
come first and are identical for every document, so llama.cpp evaluates them once per model
load and only the document's own tokens afterwards.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sidecar.extractors.chunking import chunk_text
from sidecar.extractors.judge import chat_prompt
from sidecar.extractors.llama_runtime import LlamaRuntime, reusable_prefix

#: Section headers of the answer, and the tables they feed.
SECTIONS = {"TASKS": "tasks", "MILESTONES": "timelines", "NOTES": "notes"}

SYSTEM = """\
You read a freelancer's documents (emails, meeting notes, chats, plans, exports) and list what \
matters in them, copying the document's own words. Answer with these sections only:
TASKS: every action someone still has to do (requests, assignments, commitments, open to-dos), \
one per line. Not what is already done, not questions, not ideas.
MILESTONES: dated milestones, deadlines and scheduled events, one per line, with their date as \
the document writes it.
NOTES: decisions, agreements and key facts worth keeping (budget, scope, dates), one per line.
Write "- none" under a section that has nothing. Do not explain."""

EXAMPLE_DOC = """\
Garden club minutes, 18 March 2030
- Tom to order 20 tulip bulbs by Friday
- [x] Book the hall for April
- Priya will repaint the shed door
- Could someone ask the council about the water meter?
We agreed the fence stays green. Membership is now 42 households.
Spring fair on 27 April; seed swap on 11 May.
Thanks all, see you next month!"""

EXAMPLE_ANSWER = """\
TASKS:
- Tom to order 20 tulip bulbs by Friday
- Priya will repaint the shed door
- Ask the council about the water meter
MILESTONES:
- Spring fair on 27 April
- Seed swap on 11 May
NOTES:
- We agreed the fence stays green
- Membership is now 42 households"""

#: Tokens for the answer; a document with more records is read in smaller chunks.
MAX_ANSWER_TOKENS = 320
_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+(?P<text>.+?)\s*$")
_HEADER = re.compile(r"^\s*[*#]*\s*(?P<name>[A-Z]{2,})\s*\**\s*:\s*\**\s*(?P<rest>.*)$")


@dataclass
class Reading:
    """What the model listed, per table, in its own order (texts, not yet grounded)."""

    lists: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in
                                                                 SECTIONS.values()})
    calls: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    answer_tokens: int = 0
    truncated: int = 0
    #: Passes stopped because the model began writing a line of a section a second time.
    looped: int = 0
    #: The shared prefix's tokens (system prompt and worked example): not the document's.
    prefix_tokens: int = 0
    #: llama.cpp's own counters: milliseconds and tokens of prompt evaluation and generation.
    prompt_ms: float = 0.0
    answer_ms: float = 0.0
    prompt_evaluated: int = 0
    generated: int = 0


def parse_reading(answer: str, reading: Reading) -> None:
    """Add the answer's listed lines to ``reading`` (unknown sections and "none" ignored)."""
    table: str | None = None
    for line in answer.splitlines():
        head = _HEADER.match(line)
        if head is not None:  # a section: ours, or one we do not read
            table = SECTIONS.get(head["name"])
            line = head["rest"]
            if not line.strip():
                continue
        m = _ITEM.match(line)
        text = (m["text"] if m else line).strip().strip("*_\"'")
        if table is None or len(text) < 4 or text.lower().rstrip(".") in ("none", "n/a"):
            continue
        if text not in reading.lists[table]:  # a copy adds nothing: it grounds to the same span
            reading.lists[table].append(text)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def repeats(answer: str, document: str = "") -> bool:
    """Whether a complete line of ``answer`` lists what its section already listed more often
    than ``document`` says it (a task written twice in it may be listed twice): a small model
    at temperature 0 can write one task over and over until its token cap."""
    seen: Counter[str] = Counter()
    doc = _norm(document)
    for line in answer.split("\n")[:-1]:
        head = _HEADER.match(line)
        if head is not None:
            seen = Counter()
            line = head["rest"]
        m = _ITEM.match(line)
        text = _norm(m["text"] if m else line)
        if len(text) < 4:
            continue
        seen[text] += 1
        if seen[text] > max(1, doc.count(text)):
            return True
    return False


class LoopGuard:
    """llama.cpp stopping criterion: ends a pass once :func:`repeats` sees a line again, so
    the answer's budget is not spent on copies (nothing after a loop was ever new)."""

    def __init__(self, llm: Any, prompt_tokens: int, document: str) -> None:
        self.llm, self.prompt_tokens, self.document = llm, prompt_tokens, document
        self.stopped = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        new = [int(t) for t in input_ids[self.prompt_tokens:]]
        if not new or b"\n" not in self.llm.detokenize(new[-1:]):
            return False  # a line can only complete on a newline
        text = self.llm.detokenize(new).decode("utf-8", errors="ignore")
        self.stopped = repeats(text, self.document)
        return self.stopped


def messages(document: str, reference: datetime, instructions: str) -> list[dict[str, str]]:
    """Prefix (system, worked example) shared by every document; the document last."""
    user = f"Document (dated {reference:%A %d %B %Y}):\n{document}"
    if instructions.strip():
        user = f"The user's instructions: {instructions.strip()[:600]}\n\n{user}"
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Document (dated Monday 18 March 2030):\n{EXAMPLE_DOC}"},
            {"role": "assistant", "content": EXAMPLE_ANSWER},
            {"role": "user", "content": user}]


def _read_sync(llm: Any, runtime: LlamaRuntime, text: str, reference: datetime,
               instructions: str, reading: Reading) -> None:
    prompt = chat_prompt(llm).render(messages(text, reference, instructions))
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    if len(tokens) + MAX_ANSWER_TOKENS >= llm.n_ctx():
        raise ValueError("too long")
    reused = reusable_prefix(llm, tokens)
    if not reading.prefix_tokens:
        head = chat_prompt(llm).render(messages("", reference, instructions)[:3])
        reading.prefix_tokens = len(llm.tokenize(head.encode("utf-8"), add_bos=False,
                                                 special=True))
    _perf_reset(llm)
    from llama_cpp import StoppingCriteriaList

    guard = LoopGuard(llm, len(tokens), text)
    out = llm.create_completion(prompt=tokens, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0,
                                seed=0, stop=["\n\n\n", "<|im_end|>", "<|endoftext|>"],
                                stopping_criteria=StoppingCriteriaList(
                                    [guard, lambda ids, logits: runtime.should_stop()]))
    _perf_add(llm, reading)
    choice = out["choices"][0]
    usage = out.get("usage", {})
    reading.calls += 1
    reading.prompt_tokens += len(tokens)
    reading.reused_tokens += reused
    reading.answer_tokens += int(usage.get("completion_tokens", 0))
    reading.truncated += choice.get("finish_reason") == "length"
    reading.looped += guard.stopped
    runtime.tokens_reused += reused
    runtime.tokens_evaluated += len(tokens) - reused
    parse_reading(choice["text"], reading)


def _perf_reset(llm: Any) -> None:
    try:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(llm.ctx)
    except Exception:  # an older binding without perf counters: rates unknown
        pass


def _perf_add(llm: Any, reading: Reading) -> None:
    """This pass's prompt-evaluation and generation time as llama.cpp counted them."""
    try:
        import llama_cpp

        perf = llama_cpp.llama_perf_context(llm.ctx)
    except Exception:
        return
    reading.prompt_ms += perf.t_p_eval_ms
    reading.answer_ms += perf.t_eval_ms
    reading.prompt_evaluated += perf.n_p_eval
    reading.generated += perf.n_eval


def chunk_chars(n_ctx: int) -> int:
    """Document characters per pass: the context less the prefix and the answer."""
    return max(600, int((n_ctx - 450 - MAX_ANSWER_TOKENS) * 3.0))


async def read_document(runtime: LlamaRuntime, text: str, reference: datetime,
                        instructions: str = "") -> Reading:
    """The model's lists for ``text``: one pass, or one per chunk of a long document."""
    reading = Reading()
    budget = chunk_chars(runtime.n_ctx)
    pending = [c.text for c in chunk_text(text, budget)]
    while pending:
        part = pending.pop(0)
        try:
            await runtime.call(lambda llm, p=part: _read_sync(
                llm, runtime, p, reference, instructions, reading))
        except ValueError:  # denser than the estimate: halve it and read both halves
            if len(part) < 400:
                continue
            pending[:0] = [c.text for c in chunk_text(part, len(part) // 2 + 1, 0)]
    return reading
