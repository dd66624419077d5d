"""The Orthrus diffusion heads: add them to a Qwen3 model, freeze the base, train the six `*_diff`
tensors per layer (the math is in diffusion_loss.py; the recipe is the paper's, arXiv 2605.12825).

Each step trains on rows drawn from self-distilled rows (the base model's own continuations,
self_distill.py) and from corpus windows, with one block size K per step cycling through
`block_sizes` (mixed K: one head for every K the engine may use), blocks tiled from a random
anchor offset, forward KL to the frozen AR view on every masked position.
"""
from __future__ import annotations

from pathlib import Path

import torch

from workers.loader import load_model
from workers.model import Qwen3Orthrus
from workers.model_source import is_diff_tensor  # the one `*_diff` name rule
from workers.training.diffusion_loss import diffusion_kl_step, tile_blocks
from workers.training.loop import Schedule, sample_windows, train_loop

DIFF_TWINS = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")  # each X has an X_diff


def add_diffusion_heads(base: Qwen3Orthrus) -> Qwen3Orthrus:
    """An Orthrus model holding `base`'s tensors (shared storage) and `*_diff` copies of their AR twins.

    Copy-initialisation is the paper's recipe: at step 0 the diffusion view is the AR view, so
    training starts from a model that already drafts the anchor's successor well.
    """
    model = Qwen3Orthrus(base.config, orthrus=True).to(device=base.model.embed_tokens.weight.device,
                                                         dtype=base.model.embed_tokens.weight.dtype)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False, assign=True)
    if unexpected or any(not is_diff_tensor(n) for n in missing):
        raise ValueError(f"base and Orthrus module trees differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            for name in DIFF_TWINS:
                getattr(attn, f"{name}_diff").weight.copy_(getattr(attn, name).weight)
    model.inv_freq = base.inv_freq
    return model


def freeze_base(model: Qwen3Orthrus) -> list[torch.nn.Parameter]:
    """Freeze every base tensor; return the `*_diff` parameters, the only ones that train."""
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_diff_tensor(name))
        if is_diff_tensor(name):
            trainable.append(p)
    return trainable


def load_for_heads(base_dir: str | Path, device: str, init: str = "ar") -> Qwen3Orthrus:
    """The checkpoint as an Orthrus model in fp32: `*_diff` copied from the AR twins (init="ar") or,
    for an Orthrus checkpoint with init="checkpoint", its own heads (to continue training)."""
    model, _ = load_model(base_dir, device=device, dtype=torch.float32)
    if model.orthrus and init == "checkpoint":
        return model
    if model.orthrus:  # start over from the AR twins: drop the stored heads first
        base = Qwen3Orthrus(model.config, orthrus=False).to(device)
        base.load_state_dict({k: v for k, v in model.state_dict().items() if not is_diff_tensor(k)}, strict=True)
        base.inv_freq = model.inv_freq
        model = base
    return add_diffusion_heads(model)


def train_heads(model: Qwen3Orthrus, *, mask_token_id: int, schedule: Schedule, block_sizes: tuple[int, ...],
                batch_size: int, seq_len: int, rows: torch.Tensor | None = None, stream: torch.Tensor | None = None,
                rows_share: float = 0.5, index_decay: float = 1.0, seed: int = 0, log_every: int = 50,
                log=print) -> list[dict]:
    """Train the `*_diff` tensors of `model` in place; returns the logged history.

    Each batch takes round(rows_share * batch_size) rows of `rows` [N, seq_len] (self-distilled)
    and the rest as random windows of `stream` (1-D corpus tokens); either source may be absent.
    `index_decay` weighs the loss per block index (diffusion_kl_step).
    """
    if rows is None and stream is None:
        raise ValueError("give rows (self-distilled) and/or stream (corpus tokens)")
    if rows is not None and rows.shape[1] != seq_len:
        raise ValueError(f"rows have length {rows.shape[1]}, expected seq_len={seq_len}")
    n_rows = batch_size if stream is None else (0 if rows is None else round(rows_share * batch_size))
    params = freeze_base(model)
    dev = params[0].device

    def step_fn(step: int, gen: torch.Generator):
        kb = block_sizes[step % len(block_sizes)]
        parts = []
        if n_rows:
            parts.append(rows[torch.randint(0, rows.shape[0], (n_rows,), generator=gen).to(rows.device)])
        if batch_size - n_rows:
            parts.append(sample_windows(stream, batch_size - n_rows, seq_len, gen))
        batch = torch.cat(parts).to(dev)
        offset = int(torch.randint(1, kb + 1, (1,), generator=gen))
        out = diffusion_kl_step(model, batch, tile_blocks(seq_len, kb, offset, device=dev), mask_token_id, index_decay)
        return out.loss, lambda: {"block_size": kb, "kl": round(float(out.loss.detach()), 4),
                                  "accept_proxy": round(float(out.accept_length), 3),
                                  "agree_first": round(float(out.agreement[0]), 3)}

    return train_loop(params, step_fn, schedule=schedule, seed=seed, log_every=log_every, log_first=len(block_sizes),
                      log=log, describe=lambda r: f"[heads] step {r['step']} t={r['elapsed_s']}s K={r['block_size']} "
                                                  f"lr={r['lr']:.2e} kl={r['kl']} accept~{r['accept_proxy']} "
                                                  f"agree[0]={r['agree_first']}")


def distill_from_stream(model: Qwen3Orthrus, stream: torch.Tensor, n: int, prompt_len: int, seq_len: int,
                        batch_size: int, seed: int = 0, seconds: float | None = None) -> torch.Tensor:
    """Up to `n` self-distilled rows [n', seq_len]: random corpus prefixes of `prompt_len` tokens,
    continued by the model (fewer than n when the `seconds` budget ends first; see distill_rows)."""
    from workers.training.self_distill import distill_rows

    gen = torch.Generator().manual_seed(seed)
    prompts = sample_windows(stream, n, prompt_len, gen)
    return distill_rows(model, prompts, seq_len - prompt_len, batch_size, seed=seed, seconds=seconds)



def load_token_stream(tokens: str | None, text: list[str] | None, tokenizer_dir: Path) -> torch.Tensor | None:
    """A corpus as one 1-D token tensor: a .npy array of ids, or text files (globs) tokenized with
    `tokenizer_dir`'s tokenizer.json, each followed by `<|endoftext|>`; None when neither is given."""
    if tokens:
        import numpy as np

        return torch.from_numpy(np.load(tokens).astype(np.int64))
    if text:
        import glob

        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        eot = tok.token_to_id("<|endoftext|>")
        ids: list[int] = []
        for path in sorted(p for pattern in text for p in glob.glob(pattern)):
            ids += tok.encode(Path(path).read_text(encoding="utf-8", errors="replace"), add_special_tokens=False).ids
            ids += [eot] if eot is not None else []
        return torch.tensor(ids, dtype=torch.int64)
    return None


def find_mask_token_id(explicit: int | None, base_dir: Path, config_mask_id: int | None) -> int:
    """The mask token: given, else the checkpoint config's, else the tokenizer's `<|mask|>`."""
    if explicit is not None:
        return explicit
    if config_mask_id is not None:
        return config_mask_id
    tok_file = base_dir / "tokenizer.json"
    if tok_file.is_file():
        from tokenizers import Tokenizer

        tid = Tokenizer.from_file(str(tok_file)).token_to_id("<|mask|>")
        if tid is not None:
            return tid
    raise SystemExit("no mask token: pass --mask-token-id (an unused row of the embedding; 151669 for Qwen3)")
