"""What counts as a Hugging Face hub id, and which of a hub repo's files we ever fetch.

Torch-free, so the driver (pipeline/model_path.py) can check model.path before Ray starts with the
same rule the workers and the loader apply.
"""
from __future__ import annotations

import os
import re

# Weights, configs and tokenizers; never code or pickles (no remote code, safetensors only).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
# The hub's repo id syntax: `org/name`, letters, digits, `-`, `_`, `.` (no `--` or `..`, no edge dots).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def is_hub_id(path: str) -> bool:
    """`org/name` that is not a path on this machine.

    A string whose first part is a local folder (`models/qwen` beside a `models/` folder) is a
    local path that does not exist, not a hub id: offline, taking it for one buried the cause
    under a long hub traceback (issue 13).
    """
    path = str(path)
    if os.path.exists(path) or not _HUB_ID.fullmatch(path) or ".." in path or "--" in path:
        return False
    return not os.path.isdir(path.split("/", 1)[0])
