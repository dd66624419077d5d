"""Head training (workers/training/): the block layout and mask, the loss going down, the checkpoint it
writes, the entry points, and the inference path never importing training code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workers
from jobs.train_heads import main
from workers.tiny import write_tiny_checkpoint
from workers.training.checkpoint import read_base_tensors
from workers.training.diffusion_loss import (block_inputs, causal_attend, diffusion_kl_step, packed_blocks_attend,
                                             packed_blocks_mask, tile_blocks)
from workers.training.heads import freeze_base, load_for_heads, train_heads
from workers.training.loop import Schedule

MASK = 261  # tiny_config's mask token id
ROOT = Path(workers.__file__).resolve().parent.parent  # the tree whose `workers` these tests import


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A plain Qwen3 tiny checkpoint stored in bf16 (like the demo base): no *_diff tensors."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("base"), orthrus=False, dtype=torch.bfloat16, seed=3)


def test_tile_blocks_and_mask_layout():
    layout = tile_blocks(row_len=10, block_size=3, offset=1)
    assert layout.anchors.tolist() == [1, 4, 7]
    assert layout.positions().tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert layout.target_positions().tolist() == [[1, 2], [4, 5], [7, 8]]
    mask = packed_blocks_mask(layout)  # [9, 10 + 9]
    assert mask.shape == (9, 19)
    # block 1 (queries 3..5, anchor 4): AR keys 0..3, its own three diffusion keys, nothing else
    for q in (3, 4, 5):
        assert mask[q, :10].tolist() == [True] * 4 + [False] * 6
        assert mask[q, 10:].tolist() == [False] * 3 + [True] * 3 + [False] * 3
    tokens = torch.arange(10)[None]
    ids, pos = block_inputs(tokens, layout, MASK)
    assert ids.tolist() == [[1, MASK, MASK, 4, MASK, MASK, 7, MASK, MASK]]
    assert pos.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    with pytest.raises(ValueError):
        tile_blocks(row_len=10, block_size=3, offset=0)


def _heads_unlike_their_twins(base_dir):
    """The tiny model with its `*_diff` tensors moved off their AR twins (seeded), so the views differ."""
    model = load_for_heads(base_dir, "cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_diff" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return model


def test_batched_block_pass_equals_one_block_at_a_time(base_dir):
    """The masked pass over all blocks gives each block exactly what decoding would: AR keys before
    the anchor plus its own block, no other block."""
    model = _heads_unlike_their_twins(base_dir)
    tokens = torch.randint(0, 256, (2, 29), generator=torch.Generator().manual_seed(0))
    layout = tile_blocks(29, 5, offset=2)
    ar_kv: list = []
    pos = torch.arange(29)[None].expand(2, -1)
    with torch.no_grad():
        model(tokens, pos, "ar", causal_attend(ar_kv))
        ids, dpos = block_inputs(tokens, layout, MASK)
        batched = model.logits(model(ids, dpos, "diffusion", packed_blocks_attend(ar_kv, packed_blocks_mask(layout))))
        for b, a in enumerate(layout.anchors.tolist()):
            def attend(i, q, k, v, a=a):
                keys = torch.cat([ar_kv[i][0][:, :, :a], k], 2).repeat_interleave(2, 1)
                vals = torch.cat([ar_kv[i][1][:, :, :a], v], 2).repeat_interleave(2, 1)
                return F.scaled_dot_product_attention(q, keys, vals)
            one = model.logits(model(ids[:, b * 5:(b + 1) * 5], dpos[:, b * 5:(b + 1) * 5], "diffusion", attend))
            torch.testing.assert_close(batched[:, b * 5:(b + 1) * 5], one, atol=1e-5, rtol=1e-5)


def test_few_steps_lower_the_loss_and_touch_only_heads(base_dir):
    model = load_for_heads(base_dir, "cpu")
    base_before = {n: p.clone() for n, p in model.named_parameters() if "_diff" not in n}
    diff_before = {n: p.clone() for n, p in model.named_parameters() if "_diff" in n}
    gen = torch.Generator().manual_seed(1)
    stream = torch.randint(0, 256, (4000,), generator=gen)
    stream[::7] = 42  # some structure, so there is something to learn
    probe = torch.stack([stream[i:i + 32] for i in range(0, 320, 40)])  # [8, 32]
    layout = tile_blocks(32, 4, offset=1)
    freeze_base(model)
    before = float(diffusion_kl_step(model, probe, layout, MASK).loss.detach())
    train_heads(model, mask_token_id=MASK, schedule=Schedule(peak_lr=3e-3, steps=25, warmup=0.0), block_sizes=(4, 8),
                batch_size=8, seq_len=32, stream=stream, log=lambda m: None)
    after = float(diffusion_kl_step(model, probe, layout, MASK).loss.detach())
    assert after < 0.8 * before
    for n, p in model.named_parameters():
        if "_diff" in n:
            assert not torch.equal(p, diff_before[n]), n
        else:
            assert torch.equal(p, base_before[n]), n


def test_init_copies_the_ar_twins(base_dir):
    model = load_for_heads(base_dir, "cpu")
    for layer in model.model.layers:
        a = layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            assert torch.equal(getattr(a, name).weight, getattr(a, f"{name}_diff").weight)


def test_main_writes_an_orthrus_checkpoint_the_engine_runs(base_dir, tmp_path):
    from workers.engine import Engine, SamplingParams

    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.random.default_rng(0).integers(0, 256, 3000).astype(np.uint16))
    out = tmp_path / "orthrus"
    assert main(["--base", str(base_dir), "--out", str(out), "--tokens", str(tokens), "--distill-rows", "4",
                 "--prompt-len", "8", "--seq-len", "32", "--batch-size", "4", "--steps", "6", "--block-sizes", "4,8",
                 "--mask-token-id", str(MASK), "--device", "cpu"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["OrthrusLM"]
    assert cfg["auto_map"] == {"AutoModelForCausalLM": "modeling_orthrus.OrthrusLM"}
    assert (cfg["block_size"], cfg["mask_token_id"], cfg["model_type"]) == (8, MASK, "qwen3")
    base, new = read_base_tensors(base_dir), read_base_tensors(out)
    assert set(new) - set(base) == {f"model.layers.{i}.self_attn.{n}_diff.weight" for i in range(2)
                                    for n in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")}
    for name, t in base.items():  # every base tensor bit-identical, dtype included
        assert new[name].dtype == t.dtype == torch.bfloat16
        assert torch.equal(new[name].view(torch.int16), t.view(torch.int16)), name
    assert not torch.equal(new["model.layers.0.self_attn.q_proj_diff.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert (out / "tokenizer.json").is_file()
    engine = Engine.from_pretrained(str(out), device="cpu", dtype="float32", max_batch_size=2, max_model_len=64)
    prompts = [[5, 6, 7, 8], [100, 101]]
    params = SamplingParams(max_new_tokens=12, stop_token_ids=())
    orthrus, ar = engine.generate(prompts, params, mode="orthrus"), engine.generate(prompts, params, mode="ar")
    assert [r.token_ids for r in orthrus] == [r.token_ids for r in ar]
    assert all(len(r.token_ids) == 12 and r.stats.diffusion_passes > 0 for r in orthrus)


def test_self_distilled_greedy_rows_are_the_engines_ar_output(base_dir):
    from workers.training.self_distill import distill_rows
    from workers.engine import Engine, SamplingParams

    model = load_for_heads(base_dir, "cpu")
    prompts = torch.randint(0, 256, (3, 6), generator=torch.Generator().manual_seed(5))
    rows = distill_rows(model, prompts, 10, batch_size=3, temperatures=(0.0,))
    assert rows.shape == (3, 16) and torch.equal(rows[:, :6], prompts)
    engine = Engine.from_pretrained(str(base_dir), device="cpu", dtype="float32", max_batch_size=3, max_model_len=32)
    ar = engine.generate(prompts.tolist(), SamplingParams(max_new_tokens=10, stop_token_ids=()), mode="ar")
    assert rows[:, 6:].tolist() == [r.token_ids for r in ar]
    mixed = distill_rows(model, prompts, 10, batch_size=2, temperatures=(0.0, 1.0), seed=0)
    assert torch.equal(mixed[:2], rows[:2])  # first batch greedy, second sampled
    assert "model.layers.0.self_attn.q_proj.weight" in dict(model.named_parameters())  # the model itself stays unfused


def test_index_decay_weighs_early_drafts(base_dir):
    """decay 1 is the plain mean; decay g weighs block index i by g**i, normalised to mean 1."""
    model = _heads_unlike_their_twins(base_dir)
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    layout = tile_blocks(24, 4, offset=1)
    with torch.no_grad():
        plain = diffusion_kl_step(model, tokens, layout, MASK)
        decayed = diffusion_kl_step(model, tokens, layout, MASK, index_decay=0.5)
    per_index = plain.kl_by_index  # [3]
    torch.testing.assert_close(plain.loss, per_index.mean())
    w = torch.tensor([1.0, 0.5, 0.25])
    torch.testing.assert_close(decayed.loss, (per_index * w / w.mean()).mean())
    assert torch.equal(decayed.kl_by_index, per_index)


def test_distill_seconds_stops_between_batches(base_dir):
    from workers.training.self_distill import distill_rows

    model = load_for_heads(base_dir, "cpu")
    prompts = torch.randint(0, 256, (6, 5), generator=torch.Generator().manual_seed(7))
    full = distill_rows(model, prompts, 6, batch_size=2, temperatures=(0.0, 1.0), seed=3)
    cut = distill_rows(model, prompts, 6, batch_size=2, temperatures=(0.0, 1.0), seed=3, seconds=0.0)
    assert full.shape == (6, 11) and cut.shape == (2, 11)  # at least one batch, then the budget stops it
    assert torch.equal(cut, full[:2])
    every = distill_rows(model, prompts, 6, batch_size=2, temperatures=(0.0, 1.0), seed=3, seconds=1e9)
    assert torch.equal(every, full)  # batch by batch gives the rows of one call


def test_sharded_checkpoint_files_stay_under_the_limit(tmp_path, monkeypatch):
    from workers.training import checkpoint

    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 1000)
    tensors = {"a": torch.zeros(200), "b": torch.zeros(200), "c": torch.zeros(10), "d": torch.zeros(10)}  # 800, 800, 40, 40 B
    checkpoint.save_safetensors(tensors, tmp_path, shards=2)  # round-robin would put a and c, b and d: fine
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    for f in tmp_path.glob("*"):
        f.unlink()
    tensors = {"a": torch.zeros(200), "b": torch.zeros(10), "c": torch.zeros(200)}  # a + c would share a shard of 1600 B
    checkpoint.save_safetensors(tensors, tmp_path, shards=2)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 3 and all(f.stat().st_size < 1000 + 200 for f in files)
    assert set(read_base_tensors(tmp_path)) == {"a", "b", "c"}


def test_inference_path_never_imports_training():
    """Every inference module of workers/ (all but training/ and the tiny test fixture) loads without
    workers.training (issue 14): fails if the engine, model, loader, actor ... import training code."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, workers\n"
            "names = [m.name for m in pkgutil.iter_modules(workers.__path__) if m.name not in ('training', 'tiny')]\n"
            "assert {'engine', 'model', 'loader', 'actor'} <= set(names), names\n"
            "for n in names:\n"
            "    try:\n        importlib.import_module('workers.' + n)\n"
            "    except ModuleNotFoundError as e:  # a GPU-only dependency (triton) missing on this machine\n"
            "        if (e.name or '').startswith('workers'):\n            raise\n"
            "bad = sorted(n for n in sys.modules if n.startswith('workers.training'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT))


def test_loops_module_is_torch_free():
    import subprocess
    import sys

    code = ("import sys\nfrom workers.metrics import loop_rate, empty_rate\n"
            "assert loop_rate([[1, 2] * 40, list(range(90))]) == 0.5\n"
            "assert 'torch' not in sys.modules, 'loops pulled in torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT))


@pytest.mark.parametrize("module", ["jobs.train_heads", "jobs.train_base", "jobs.build_demo", "jobs.eval_demo"])
def test_entry_point_help_is_complete(module, capsys):
    """--help gives the exact command, no reference to a file the repository lacks, and for every
    option a help text with its default (issue 13 item 7)."""
    import importlib

    mod = importlib.import_module(module)
    assert f"python -m {module}" in mod.__doc__
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "ORTHRUS.md" not in text and "ORTHRUS.md" not in mod.__doc__
    import re

    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])[1:]
    assert blocks, text
    for block in blocks:
        flag = block.split()[0]
        if flag.startswith("-h"):
            continue
        assert "(default:" in block, f"{module} {flag} shows no help or default:\n{block}"
