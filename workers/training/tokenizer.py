"""Train the demo model's byte-level BPE tokenizer and save it in Hugging Face format.

Byte-level, so any text round-trips; Qwen3's special tokens (`<|endoftext|>`, `<|im_start|>`,
`<|im_end|>`, `<think>`, `</think>`) plus `<|mask|>`, the Orthrus mask token (arXiv 2605.12825: the
diffusion view feeds it at every drafted position); the Qwen3-style chat template from
`workers.tiny`, so `AutoTokenizer.from_pretrained(folder).apply_chat_template(...)` works as it does
for a real Qwen3 checkpoint. A small vocabulary (4096 by default) keeps the embedding a small share
of a ~9M-parameter model.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from workers.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS

EOS_TOKEN, PAD_TOKEN, MASK_TOKEN = "<|im_end|>", "<|endoftext|>", "<|mask|>"


def train_bpe(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """A `tokenizers.Tokenizer` trained on `texts`; special tokens take ids 0..5 in SPECIAL_TOKENS order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_hf_tokenizer(tok, folder: str | Path) -> dict[str, int]:
    """Save `tok` as a fast HF tokenizer with our chat template; returns the special-token ids."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, bos_token=None)
    fast.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)]})
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def encode_documents(tok, texts: list[str], eot_id: int, batch: int = 2048) -> Iterator[list[int]]:
    """Token ids per document, each followed by `<|endoftext|>` (documents are packed later)."""
    for i in range(0, len(texts), batch):
        for enc in tok.encode_batch(texts[i:i + batch], add_special_tokens=False):
            yield enc.ids + [eot_id]
