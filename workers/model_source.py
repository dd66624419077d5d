"""Where a checkpoint comes from: a local folder or a Hugging Face hub id; checked, then resolved.

Torch-free, so the driver checks model.path before Ray starts (pipeline/job.py: a wrong checkpoint
fails in a second with one line instead of inside every actor, issue 13) with the same rules the
actor and the loader resolve it by. Also the one test of a checkpoint tensor name's view
(`is_diff_tensor`).

  check(path)    a local folder needs config.json, safetensors weights and a tokenizer; a hub id
                 must be fetchable (its config.json is fetched, or found in the HF cache)
  resolve(path)  the local folder: the folder itself, or the hub snapshot (weights, configs and
                 tokenizers only) fetched to the HF cache
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from workers.config import CheckpointError

# Weights, configs and tokenizers; never code or pickles (no remote code, safetensors only).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
# The hub's repo id syntax: `org/name`, letters, digits, `-`, `_`, `.` (no `--` or `..`, no edge dots).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Any one of these is a tokenizer transformers can load without extra packages or remote code.
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


class NoCheckpoint(CheckpointError, FileNotFoundError):
    """model.path is neither a checkpoint folder nor a hub id (a CheckpointError, and a missing file)."""


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


def is_diff_tensor(name: str) -> bool:
    """Whether a parameter or checkpoint name is one of the diffusion view's `*_diff` tensors: a
    whole-name match on the module (`...self_attn.q_proj_diff.weight`), never a substring test
    (`q_proj` is a substring of `q_proj_diff`)."""
    parts = name.rsplit(".", 2)
    return len(parts) == 3 and parts[-2].endswith("_diff")


def check(path: str) -> None:
    """Raise CheckpointError naming model.path when it is not a usable checkpoint folder or hub id."""
    if os.path.isdir(path):
        _check_folder(path)
    elif is_hub_id(path):
        _check_hub_id(path)
    else:
        raise NoCheckpoint(f"model.path {path!r}: no checkpoint folder there ({os.path.abspath(path)}), and not a "
                           f"hub id (org/name)")


def resolve(path: str | Path) -> Path:
    """The checkpoint folder for `path`: a local folder as is, else the hub id's snapshot in the HF cache.

    Raises:
        NoCheckpoint: neither a folder nor a hub id.
        CheckpointError: a hub id that cannot be fetched (offline, unknown repo, auth), saying why.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if not is_hub_id(str(path)):
        raise NoCheckpoint(f"model.path {str(path)!r} is not a checkpoint folder nor a hub id (org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, auth: say which and why
        raise CheckpointError(f"{path}: could not fetch from the Hugging Face hub: {e}") from e


def _check_folder(path: str) -> None:
    names = set(os.listdir(path))
    if "config.json" not in names:
        raise CheckpointError(f"model.path {path!r}: the folder has no config.json")
    if not ({"model.safetensors", "model.safetensors.index.json"} & names):
        raise CheckpointError(f"model.path {path!r}: the folder has no safetensors weights (model.safetensors or "
                              f"model.safetensors.index.json)")
    if not any(all(n in names for n in files) for files in _TOKENIZER_FILES):
        raise CheckpointError(f"model.path {path!r}: the folder has no tokenizer (tokenizer.json, or vocab.json "
                              f"with merges.txt, or tokenizer.model)")


def _check_hub_id(repo: str) -> None:
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo, "config.json")
    except Exception as err:  # noqa: BLE001 - offline, unknown repo, gated, network: one line either way
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            why = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        else:
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}"
        raise CheckpointError(f"model.path {repo!r}: no such local folder, and the Hugging Face hub id cannot be "
                              f"fetched ({why}); check the network, HF_HUB_OFFLINE and HF_TOKEN, or give a local "
                              f"checkpoint folder") from None
