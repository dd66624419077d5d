"""Prompts from Python source: code prefixes, and chat requests made from documented functions.

Chat: a function with a docstring becomes a request ("Write a Python function `name(args)`:
<first docstring line>") and, for training, its source as the assistant's answer in Qwen3's chat
format (with the empty think block of `enable_thinking=False`). A small share of such rows in the
training corpus teaches the demo model the chat template, so chat-style demo prompts get code
back instead of noise. Evaluation prompts come from held-out packages only.
"""
from __future__ import annotations

import ast
import json
import random
import re
import textwrap
from pathlib import Path

CHAT_PREFIX = "<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def function_requests(source: str, max_lines: int = 40) -> list[tuple[str, str]]:
    """(request, dedented function source) for each documented function of at most `max_lines` lines."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.end_lineno is None:
            continue
        doc = (ast.get_docstring(node) or "").strip()
        if not doc or node.end_lineno - node.lineno + 1 > max_lines:
            continue
        summary = doc.splitlines()[0].strip()
        if len(summary) < 12 or not summary.isascii():
            continue
        try:
            signature = f"{node.name}({ast.unparse(node.args)})"
        except (ValueError, RecursionError):
            continue
        code = textwrap.dedent("".join(lines[node.lineno - 1:node.end_lineno]))
        out.append((f"Write a Python function `{signature}`: {summary}", code))
    return out


def chat_prompt(request: str) -> str:
    """A user turn plus the assistant header, as the chat template renders it with enable_thinking=False."""
    return CHAT_PREFIX.format(request=request)


def chat_document(request: str, code: str) -> str:
    """One training document: the chat prompt, the function in a code fence, end of turn."""
    return chat_prompt(request) + f"```python\n{code.rstrip()}\n```<|im_end|>\n"


_HEAD = re.compile(r"[ \t]*[A-Za-z_][\w.]*")


def line_head(line: str) -> str | None:
    """A code line's indentation and first word (`    return`, `        self.assertEqual`), when more
    code follows it on the line; None for blank lines, comments, strings and lone words (`pass`)."""
    m = _HEAD.match(line)
    if m is None or not line[m.end():].strip():
        return None
    return m.group(0)


def code_prefix(text: str, rng: random.Random, max_chars: int = 800, min_chars: int = 200) -> str | None:
    """Whole lines of `text` up to a random cut, trimmed to start at a line start, then the head of
    the line at the cut (its indentation and first word), so the prompt ends where code continues.

    Why mid-line: after a line end, greedy decoding of a small model often picks `<|endoftext|>`
    (the next line's start is spread over many tokens, the end of file is one; issue 16: 79 of 340
    demo completions were empty); after `    return` the code can only go on. The cut lies past the
    first 10% of the file, so most prompts end in code rather than in the license header (a
    header would be easy to continue and flatter the acceptance figures).
    """
    lines = text.splitlines(keepends=True)
    if len(lines) < 12:
        return None
    cut = rng.randint(max(5, len(lines) // 10), len(lines) - 5)
    while cut < len(lines) - 1 and line_head(lines[cut]) is None:
        cut += 1  # the next line with code on it
    head = line_head(lines[cut])
    if head is None:
        return None
    kept: list[str] = []
    size = len(head)
    for line in reversed(lines[:cut]):
        if size + len(line) > max_chars:
            break
        kept.append(line)
        size += len(line)
    prefix = "".join(reversed(kept))
    return prefix + head if len(prefix) + len(head) >= min_chars and prefix.strip() else None


def recut_mid_line(prompt: str, min_chars: int = 150) -> str:
    """A line-end code prompt re-cut like code_prefix, from the prompt alone: the whole lines before
    its last code line, then that line's head. Used to re-cut the shipped demo prompts (built with
    line-end cuts) without the source files; the prompt itself when no line qualifies."""
    lines = prompt.splitlines(keepends=True)
    for j in range(len(lines) - 1, 0, -1):
        head = line_head(lines[j])
        if head is not None and len("".join(lines[:j])) + len(head) >= min_chars:
            return "".join(lines[:j]) + head
    return prompt


def build_prompt_rows(heldout: list[tuple[str, str]], n_code: int, n_chat: int, seed: int) -> list[dict]:
    """Rows for prompts.parquet from (relpath, text) of held-out files: one row per distinct file.

    Columns: id, prompt (raw text; chat rows are already in the chat template, so a job reads every
    row with chat_template=false), kind ("code" | "chat"), source (held-out file), messages (JSON text
    of the chat messages for chat rows, null for code rows).
    """
    rng = random.Random(seed)
    order = list(heldout)
    rng.shuffle(order)
    rows: list[dict] = []
    used: set[str] = set()
    for rel, text in order:
        if sum(r["kind"] == "code" for r in rows) >= n_code:
            break
        prefix = code_prefix(text, random.Random(f"{seed}:{rel}"))
        if prefix:
            rows.append({"id": f"code-{len(rows):04d}", "prompt": prefix, "kind": "code", "source": rel, "messages": None})
            used.add(rel)
    n = 0
    for rel, text in order:
        if n >= n_chat:
            break
        if rel in used:
            continue
        reqs = function_requests(text)
        if not reqs:
            continue
        request, _ = reqs[random.Random(f"{seed}:{rel}").randrange(len(reqs))]
        rows.append({"id": f"chat-{n:04d}", "prompt": chat_prompt(request), "kind": "chat", "source": rel,
                     "messages": json.dumps([{"role": "user", "content": request}])})
        used.add(rel)
        n += 1
    return rows


def write_prompts(rows: list[dict], path: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("prompt", pa.string()), ("kind", pa.string()),
                        ("source", pa.string()), ("messages", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
