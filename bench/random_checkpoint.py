"""Write a Qwen3-8B-shape OrthrusLM checkpoint with random bf16 weights, in the exact released format
(config.json with block_size/mask_token_id, sharded safetensors + index, the six *_diff tensors per
layer) and a byte-level tokenizer, so the job itself can be timed on a GPU without a download.

    python bench/random_checkpoint.py --out /tmp/qwen3-8b-random --shape 8b

The weights are the benchmark's "copy" model (bench/engine_speed.py): the next token is the current
one by a wide margin, so random prompts of byte tokens never hit a stop token and every row
generates its full budget.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_speed import SHAPES, random_model  # noqa: E402
from workers.tiny import tiny_config, write_byte_tokenizer  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="8b", choices=sorted(SHAPES))
    ap.add_argument("--shard-gb", type=float, default=4.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = random_model(args.shape, fused=False)  # the checkpoint's own tensor names
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k != "inv_freq"}
    shards, current, size, limit = [], {}, 0, args.shard_gb * 1e9
    for name in sorted(state):
        current[name] = state[name]
        size += state[name].numel() * 2
        if size >= limit:
            shards.append(current)
            current, size = {}, 0
    shards.append(current)
    weight_map = {}
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * 2 for t in state.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    cfg = tiny_config(**SHAPES[args.shape], max_position_embeddings=40960)
    cfg["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    write_byte_tokenizer(out)
    print(f"wrote {out}: {len(shards)} shards, {total / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
