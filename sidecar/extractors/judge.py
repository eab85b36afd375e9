"""The small model's only job: answer yes or no about one span; we read the two log-probabilities.

Nothing is generated, so nothing can run away or copy an example: the prompt ends where the
answer starts and the score is ``log P(yes) − log P(no)`` at that position. The system
prompt, the examples and the document's title form a prefix shared by every span of a
document (and the system prompt and examples by every document of an agent), so llama.cpp
evaluates only each span's own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.extractors.candidates import Candidate
from sidecar.extractors.llama_runtime import LlamaRuntime, eval_prompt, token_ids, yes_no_logodds

#: Spans per worker-thread call: small enough that a cancelled run stops promptly.
BATCH = 8
MAX_SPAN_CHARS = 400

QUESTIONS: dict[str, str] = {
    "tasks": "Is this line an action item: something a person still has to do?",
    "notes": "Is this line a fact or decision worth keeping as a note?",
    "timelines": "Is this line a project milestone or a dated event?",
}

#: (line, answer) pairs per table; short and varied so the model learns the format only.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "tasks": (
        ("Send the signed contract to Maria by Friday", "yes"),
        ("Thanks everyone for joining today", "no"),
        ("We shipped version 2 last week", "no"),
        ("Can you review the budget draft before Monday?", "yes"),
    ),
    "notes": (
        ("Decision: we keep the blue logo", "yes"),
        ("Book a room for the workshop", "no"),
        ("The client prefers email over calls", "yes"),
        ("See you tomorrow!", "no"),
    ),
    "timelines": (
        ("Beta release on March 3", "yes"),
        ("Please send me the file", "no"),
        ("Final delivery to the client: June 30", "yes"),
        ("Lunch was great", "no"),
    ),
}

_SYSTEM = ("You label lines from a user's documents for a freelance project-management app. "
           "Answer with one word: yes or no.")


@dataclass
class _Vocab:
    yes: list[int]
    no: list[int]


class ChatPrompt:
    """Renders messages with the model's own chat template (any GGUF), ChatML if it has none."""

    def __init__(self, llm: Any) -> None:
        meta = getattr(llm, "metadata", {}) or {}
        template = meta.get("tokenizer.chat_template")
        self._formatter: Any = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def tok(key: str) -> str:
                idx = meta.get(key)
                if idx is None:
                    return ""
                return llm.detokenize([int(idx)], special=True).decode("utf-8", "replace")

            try:
                self._formatter = Jinja2ChatFormatter(
                    template=template, eos_token=tok("tokenizer.ggml.eos_token_id"),
                    bos_token=tok("tokenizer.ggml.bos_token_id"))
            except Exception:  # a template jinja cannot compile: fall back to ChatML
                self._formatter = None

    def render(self, messages: list[dict[str, str]]) -> str:
        if self._formatter is not None:
            try:
                return str(self._formatter(messages=messages).prompt)
            except Exception:
                pass
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        return "".join(parts) + "<|im_start|>assistant\n"


def build_messages(table: str, span: str, context: str, instructions: str
                   ) -> list[dict[str, str]]:
    """System + few-shot turns + this span; identical up to the span for a whole document."""
    system = _SYSTEM
    if instructions.strip():
        system += f"\nThe user's instructions: {instructions.strip()[:600]}"
    question = QUESTIONS[table]
    msgs = [{"role": "system", "content": system}]
    for line, answer in EXAMPLES[table]:
        msgs.append({"role": "user", "content": f"{question}\nLine: {line}"})
        msgs.append({"role": "assistant", "content": answer})
    where = f"Document: {context}\n" if context else ""
    msgs.append({"role": "user", "content": f"{question}\n{where}Line: {span}"})
    return msgs


class ModelJudge:
    """Scores candidate spans with a llama.cpp model on its runtime's worker thread."""

    def __init__(self, runtime: LlamaRuntime, instructions: str = "") -> None:
        self.runtime = runtime
        self.instructions = instructions
        self.calls = 0

    async def __call__(self, table: str, cands: Sequence[Candidate], context: str
                       ) -> list[float]:
        out: list[float] = []
        for i in range(0, len(cands), BATCH):
            batch = [c.text[:MAX_SPAN_CHARS] for c in cands[i: i + BATCH]]
            out.extend(await self.runtime.call(
                lambda llm, b=batch: self._score(llm, table, b, context)))
        return out

    def _score(self, llm: Any, table: str, spans: list[str], context: str) -> list[float]:
        prompt = chat_prompt(llm)
        vocab = _vocab_for(llm)
        scores = []
        for span in spans:
            text = prompt.render(build_messages(table, span, context, self.instructions))
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            logits = eval_prompt(llm, tokens, self.runtime)
            scores.append(yes_no_logodds(logits, vocab.yes, vocab.no))
            self.calls += 1
        return scores


def chat_prompt(llm: Any) -> ChatPrompt:
    """Cached on the Llama object itself, so it goes away with an idle unload."""
    prompt = getattr(llm, "_sidecar_prompt", None)
    if prompt is None:
        prompt = ChatPrompt(llm)
        llm._sidecar_prompt = prompt
    return prompt


def _vocab_for(llm: Any) -> _Vocab:
    vocab = getattr(llm, "_sidecar_vocab", None)
    if vocab is None:
        vocab = _Vocab(yes=token_ids(llm, ["yes", "Yes"]), no=token_ids(llm, ["no", "No"]))
        llm._sidecar_vocab = vocab
    return vocab
