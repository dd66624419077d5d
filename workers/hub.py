"""What counts as a Hugging Face hub id, and which of a hub repo's files we ever fetch.

Torch-free, so the driver (pipeline/job.py) can check model.path before Ray starts with the same
rule the workers and the loader apply.
"""
from __future__ import annotations

import os

# Weights, configs and tokenizers; never code or pickles (no remote code, safetensors only).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def is_hub_id(path: str) -> bool:
    """`org/name` that is not a path on this machine."""
    path = str(path)
    return not (os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") != 1)
