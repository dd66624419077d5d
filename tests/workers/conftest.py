"""Tiny checkpoints in the exact Orthrus format, built once per test session."""
from __future__ import annotations

import pytest
import torch

from workers.tiny import write_tiny_checkpoint

# A 64-token vocabulary: 58 = <|im_end|>-like stop, 56 = <|endoftext|>-like, 61 = mask.
SMALL = dict(vocab_size=64, mask_token_id=61, eos_token_id=(58, 56), tokenizer=False)


@pytest.fixture(scope="session")
def orthrus_ckpt(tmp_path_factory):
    """Random OrthrusLM with varied (non-looping) greedy continuations."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("orthrus"), init_std=1.0, seed=1, **SMALL)


@pytest.fixture(scope="session")
def looping_ckpt(tmp_path_factory):
    """Random OrthrusLM whose greedy output repeats a token: drafts often pass."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("looping"), init_std=0.1, seed=2, **SMALL)


def random_prompts(n: int, seed: int, max_len: int = 30, vocab: int = 56) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (k,), generator=g).tolist() for k in lengths]
