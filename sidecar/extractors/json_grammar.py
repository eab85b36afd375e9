"""A llama.cpp grammar from a JSON Schema that lets the model lay JSON out as it was trained to.

llama-cpp-python's converter allows at most one space between tokens. Chat models write
JSON pretty-printed (``{\\n  "items": [\\n    {...``); forbidden the newline, the 1.5B model
took the next-likeliest path and closed the list after one record. Here whitespace may be a
space or a newline and up to 20 spaces or tabs of indentation: enough for any layout, too
little to run away in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

#: What may stand between two JSON tokens: nothing, a space, or a newline and indentation.
SPACE_RULE = 'space ::= | " " | "\\n" [ \\t]{0,20}'
_SPACE_LINE = re.compile(r"^space ::= .*$", re.M)


def _without_lengths(node: Any) -> Any:
    """``maxLength`` dropped: the converter spells it as 400 nested optionals (slow to build,
    slow to sample); the token cap bounds strings and validation truncates them."""
    if isinstance(node, dict):
        return {k: _without_lengths(v) for k, v in node.items() if k != "maxLength"}
    if isinstance(node, list):
        return [_without_lengths(v) for v in node]
    return node


@lru_cache(maxsize=64)
def _gbnf(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    text = json_schema_to_gbnf(schema_json)
    if not _SPACE_LINE.search(text):
        raise ValueError("the converter's grammar has no space rule to widen")
    return _SPACE_LINE.sub(lambda _m: SPACE_RULE, text)


def gbnf_for(schema: Mapping[str, Any]) -> str:
    """GBNF text accepting exactly the JSON documents ``schema`` describes, any layout."""
    return _gbnf(json.dumps(_without_lengths(schema), sort_keys=False))


def grammar_for(schema: Mapping[str, Any]) -> Any:
    """A ``LlamaGrammar`` for ``schema`` (call on the model's worker thread: it parses C-side)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf_for(schema), verbose=False)
