"""The demo model: corpus split, tokenizer, loop detection, a tiny end-to-end build, and the shipped demo/."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from workers.training import corpus
from workers.training.loops import loops
from workers.training.prompts import build_prompt_rows, chat_document, function_requests
from workers.training.tokenizer import save_hf_tokenizer, train_bpe

PACKAGES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
CODE = '''"""Module."""


def add(a, b):
    """Return the sum of a and b, for numbers."""
    return a + b


class Box:
    def size(self) -> int:
        """How many items the box holds right now."""
        return len(self.items)
'''


def _tree(root: Path) -> None:
    """site-packages-like tree: twelve packages of 3 files each (each 1/12 of the files), plus junk."""
    for i, name in enumerate(PACKAGES):
        for j in range(3):
            f = root / name / f"m{j}.py"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"# {name} {j}\n" + CODE * (i + 2))
    (root / "tiny.py").write_text("x = 1\n")  # under MIN_FILE_BYTES: skipped
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "junk.py").write_text(CODE)


def test_split_holds_out_whole_packages_and_their_copies(tmp_path):
    _tree(tmp_path)
    files = corpus.list_files([tmp_path])
    assert len(files) == 36 and all(f.package in f.relpath for f in files)
    split = corpus.split_by_package(files, min_heldout_files=5, heldout_fraction=0.0, max_package_share=0.5, seed=0)
    held = set(split.heldout_packages)
    assert len(split.heldout) >= 5 and len(held) == len(split.heldout) // 3
    assert {f.package for f in split.heldout} == held and not held & {f.package for f in split.train}
    # a vendored copy of a held-out package inside a training package, and a byte copy of a held-out file
    victim = sorted(held)[0]
    trainer = next(p for p in PACKAGES if p not in held)
    (tmp_path / trainer / "_vendor" / victim).mkdir(parents=True)
    (tmp_path / trainer / "_vendor" / victim / "x.py").write_text("# vendored\n" + CODE)
    (tmp_path / trainer / "copy.py").write_text((tmp_path / victim / "m0.py").read_text())
    again = corpus.split_by_package(corpus.list_files([tmp_path]), min_heldout_files=5, heldout_fraction=0.0,
                                    max_package_share=0.5, seed=0)
    assert again.heldout_packages == split.heldout_packages  # deterministic
    train_rel = {f.relpath for f in again.train}
    assert f"{trainer}/_vendor/{victim}/x.py" not in train_rel and f"{trainer}/copy.py" not in train_rel
    with pytest.raises(ValueError):
        corpus.split_by_package(files, min_heldout_files=100)


def test_tokenizer_has_qwen3_specials_and_chat_template(tmp_path):
    from transformers import AutoTokenizer

    tok = train_bpe([CODE] * 20, vocab_size=300)
    ids = save_hf_tokenizer(tok, tmp_path)
    assert ids == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<think>": 3, "</think>": 4, "<|mask|>": 5}
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (hf.eos_token, hf.pad_token) == ("<|im_end|>", "<|endoftext|>")
    text = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert hf.encode(text)[:1] == [1] and hf.decode(hf.encode(CODE)) == CODE


def test_function_requests_and_chat_rows():
    reqs = function_requests(CODE)
    assert [r for r, _ in reqs] == ["Write a Python function `add(a, b)`: Return the sum of a and b, for numbers.",
                                   "Write a Python function `size(self)`: How many items the box holds right now."]
    assert reqs[1][1].startswith("def size(self) -> int:")  # dedented
    doc = chat_document(*reqs[0])
    assert doc.startswith("<|im_start|>user\nWrite") and doc.endswith("return a + b\n```<|im_end|>\n")
    files = [(f"p/f{i}.py", f"# header {i}\n" + CODE * 3) for i in range(6)]
    rows = build_prompt_rows(files, n_code=3, n_chat=2, seed=0)
    assert [r["kind"] for r in rows] == ["code"] * 3 + ["chat"] * 2
    assert len({r["source"] for r in rows}) == 5  # distinct files
    assert json.loads(rows[-1]["messages"])[0]["role"] == "user" and rows[-1]["prompt"].endswith("</think>\n\n")


def test_loops_definition():
    assert loops([1, 2, 3] * 30)  # period 3 over 87 positions
    assert not loops(list(range(200)))
    assert not loops([7] * 64)  # a run must exceed 64 positions: 63 matches here
    assert loops([7] * 66)
    assert not loops(list(range(100)) + [1, 2] * 20)  # 38 repeating positions: too short


def test_tiny_build_end_to_end(tmp_path):
    from jobs.build_demo import main

    _tree(tmp_path / "src")
    out = tmp_path / "demo"
    main(["--out", str(out), "--work", str(tmp_path / "work"), "--roots", str(tmp_path / "src"), "--device", "cpu",
          "--min-heldout-files", "5", "--vocab", "300", "--hidden", "32", "--layers", "1", "--heads", "2",
          "--kv-heads", "1", "--intermediate", "64", "--seq-len", "32", "--batch-size", "2", "--base-steps", "3",
          "--distill-rows", "2", "--distill-batch", "2", "--prompt-len", "8", "--heads-steps", "2",
          "--heads-batch-size", "2", "--cpu-workers", "1", "--code-prompts", "3", "--chat-prompts", "1",
          "--block-sizes", "4", "--block-size", "4", "--export-tokens", "100", "--budget-s", "300"])
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["architectures"] == ["OrthrusLM"] and cfg["mask_token_id"] == 5 and cfg["eos_token_id"] == [2, 0]
    build = json.loads((out / "build.json").read_text())
    assert build["corpus"]["heldout_files"] >= 5 and build["prompts"]["code"] == 3
    assert pq.read_table(out / "prompts.parquet").num_rows == 4


# ---- the shipped demo ------------------------------------------------------------------------

def test_shipped_demo_checkpoint_format_and_size():
    from workers.loader import load_model

    cfg = json.loads((DEMO / "model" / "config.json").read_text())
    assert cfg["architectures"] == ["OrthrusLM"] and cfg["model_type"] == "qwen3"
    assert cfg["auto_map"] == {"AutoModelForCausalLM": "modeling_orthrus.OrthrusLM"}
    assert cfg["block_size"] in (4, 8, 16, 32) and cfg["mask_token_id"] == 5
    weights = sum(f.stat().st_size for f in (DEMO / "model").glob("*.safetensors"))
    assert weights < 20_000_000
    model, _ = load_model(DEMO / "model")
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000 and model.orthrus


def test_shipped_demo_prompts_and_eval():
    table = pq.read_table(DEMO / "prompts.parquet").to_pylist()
    code = [r for r in table if r["kind"] == "code"]
    assert len({r["source"] for r in code}) >= 200 and any(r["kind"] == "chat" for r in table)
    assert len({r["id"] for r in table}) == len(table)
    report = json.loads((DEMO / "eval.json").read_text())
    assert report["all_exact"] and report["prompts"] == len(table)
    assert set(report["by_block_size"]) == {"4", "8", "16", "32"}
    build = json.loads((DEMO / "build.json").read_text())
    assert build["corpus"]["heldout_files"] >= 1000
    held = set(build["corpus"]["heldout_packages"])
    assert {r["source"].split("/")[0].removesuffix(".py") for r in table} <= held


def test_shipped_demo_generates_losslessly():
    from transformers import AutoTokenizer

    from workers.engine import Engine, SamplingParams

    tok = AutoTokenizer.from_pretrained(str(DEMO / "model"))
    table = pq.read_table(DEMO / "prompts.parquet").to_pylist()
    prompts = [tok.encode(table[0]["prompt"]), tok.encode(table[-1]["prompt"])]
    engine = Engine.from_pretrained(str(DEMO / "model"), device="cpu", dtype="float32", max_batch_size=2,
                                    max_model_len=max(map(len, prompts)) + 40)
    params = SamplingParams(max_new_tokens=24)
    orthrus, ar = engine.generate(prompts, params, mode="orthrus"), engine.generate(prompts, params, mode="ar")
    assert [r.token_ids for r in orthrus] == [r.token_ids for r in ar]
    assert sum(r.stats.iterations for r in orthrus) < sum(len(r.token_ids) for r in orthrus)  # drafts accepted
