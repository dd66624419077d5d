"""model.path checked in the driver, before Ray starts, so a wrong checkpoint fails in a second
with one line instead of inside every actor (issue 13: a folder without tokenizer.json failed
after Ray started with transformers' advice to install sentencepiece).

A local folder needs config.json, safetensors weights and a tokenizer; a hub id (`org/name`,
workers/hub.py) must be fetchable: its config.json is fetched here (or found in the HF cache).
"""
from __future__ import annotations

import os

from pipeline.shards import InputError
from workers.hub import is_hub_id

# Any one of these is a tokenizer transformers can load without extra packages or remote code.
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


def check_model_path(path: str) -> None:
    """Raise InputError naming model.path when it is not a usable checkpoint folder or hub id."""
    if os.path.isdir(path):
        _check_folder(path)
    elif is_hub_id(path):
        _check_hub_id(path)
    else:
        raise InputError(f"model.path {path!r}: no checkpoint folder there ({os.path.abspath(path)}), and not a "
                         f"hub id (org/name)")


def _check_folder(path: str) -> None:
    names = set(os.listdir(path))
    if "config.json" not in names:
        raise InputError(f"model.path {path!r}: the folder has no config.json")
    if not ({"model.safetensors", "model.safetensors.index.json"} & names):
        raise InputError(f"model.path {path!r}: the folder has no safetensors weights (model.safetensors or "
                         f"model.safetensors.index.json)")
    if not any(all(n in names for n in files) for files in _TOKENIZER_FILES):
        raise InputError(f"model.path {path!r}: the folder has no tokenizer (tokenizer.json, or vocab.json with "
                         f"merges.txt, or tokenizer.model)")


def _check_hub_id(repo: str) -> None:
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo, "config.json")
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, gated, network: one line either way
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            why = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        else:
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}"
        raise InputError(f"model.path {repo!r}: no such local folder, and the Hugging Face hub id cannot be "
                         f"fetched ({why}); check the network, HF_HUB_OFFLINE and HF_TOKEN, or give a local "
                         f"checkpoint folder") from None
