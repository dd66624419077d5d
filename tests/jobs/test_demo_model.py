"""The demo model: corpus split, tokenizer, loop detection, a tiny end-to-end build, and the shipped demo/."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from workers.training import corpus
from workers.metrics import loops
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


def test_code_prompts_end_where_code_continues():
    """Code prompts stop after the first word of a code line (issue 16: after a line end the demo
    model often ended the file at once, 79 of 340 completions empty); re-cutting a line-end prompt
    from the prompt alone gives the same kind of cut."""
    from workers.training.prompts import code_prefix, line_head, recut_mid_line

    assert line_head("        return a + b\n") == "        return"
    assert line_head("    self.items.append(x)\n") == "    self.items.append"
    assert [line_head(x) for x in ("pass\n", "# comment\n", "\n", '    """doc\n')] == [None] * 4
    text = "# header\n" + CODE * 3
    for seed in range(5):
        prefix = code_prefix(text, __import__("random").Random(seed), min_chars=100)
        assert prefix is not None and text.find(prefix) >= 0 and not prefix.endswith("\n")
        at = text.find(prefix) + len(prefix)
        assert text[at] not in "\n" and text[at - 1].isalnum()  # mid-line, right after a word
    cut = recut_mid_line(CODE, min_chars=40)
    assert CODE.startswith(cut) and cut.endswith("        return") and not CODE[len(cut):].startswith("\n")


def test_loops_definition():
    assert loops([1, 2, 3] * 30)  # period 3 over 87 positions
    assert not loops(list(range(200)))
    assert not loops([7] * 64)  # a run must exceed 64 positions: 63 matches here
    assert loops([7] * 66)
    assert not loops(list(range(100)) + [1, 2] * 20)  # 38 repeating positions: too short
    from workers.metrics import empty_rate, is_empty, loop_rate, loop_span_for

    assert loop_span_for(128) == 64 and loop_span_for(32) == 16  # the demo job's 32 tokens: two copies of a unit
    assert loop_rate([[1, 2] * 16, list(range(32))], span=loop_span_for(32)) == 0.5
    assert loop_rate([[1, 2] * 16]) == 0.0 and loop_rate([]) == 0.0  # 32 tokens never loop over 64
    assert is_empty([], [2]) and is_empty([2, 5], [2, 0]) and not is_empty([5, 2], [2])
    assert empty_rate([[0], [7, 0], [2], [9]], [2, 0]) == 0.5


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
    # the per-prompt records are the aggregates' terms: same prompts, same sums
    per = report["per_prompt"]
    assert [p["id"] for p in per] == [r["id"] for r in table]
    for k, entry in report["by_block_size"].items():
        assert entry["all"]["committed_tokens"] == sum(p["tokens"] for p in per)
        assert entry["all"]["iterations"] == sum(p["iterations"][k] for p in per)
    assert report["loop_rate"] == round(sum(p["loops"] for p in per) / len(per), 3)
    assert report["empty_rate"] == round(sum(p["empty"] for p in per) / len(per), 3)


# A fixed subset of the shipped prompts (7 code, 1 chat), recomputed on the CPU in fp32 by the two
# tests below (one Orthrus run of 8 x 128 tokens, shared).
SUBSET = [0, 40, 80, 120, 160, 200, 240, 310]
# The shipped model's acceptance on SUBSET at its block size (K=8, 128 new tokens, fp32): 3.230
# (demo/eval.json, measured on the H200; this CPU gives the same tokens and iterations). The floor
# leaves 0.13 for a rewritten engine's numerics; a draft-path bug costs far more: diffusion queries
# that see only the prefix (not the anchor and the block) give 1.98 here (workers/attention.py,
# in a scratch copy).
ACCEPTANCE_FLOOR = 3.10


@pytest.fixture(scope="module")
def subset_run():
    from workers.engine import Engine, SamplingParams
    from workers.training.evaluation import encode_prompts

    table = pq.read_table(DEMO / "prompts.parquet").to_pylist()
    report = json.loads((DEMO / "eval.json").read_text())
    k = json.loads((DEMO / "model" / "config.json").read_text())["block_size"]
    ids = encode_prompts(DEMO / "model", [table[i]["prompt"] for i in SUBSET])
    engine = Engine.from_pretrained(str(DEMO / "model"), device="cpu", dtype="float32", max_batch_size=len(ids),
                                    max_model_len=max(map(len, ids)) + report["max_new_tokens"] + 1)
    results = engine.generate(ids, SamplingParams(max_new_tokens=report["max_new_tokens"], block_size=k), mode="orthrus")
    return k, results, [report["per_prompt"][i] for i in SUBSET]


def test_shipped_demo_eval_recomputes_on_a_subset(subset_run):
    """demo/eval.json is what the code computes: on SUBSET, the Orthrus completions are the recorded
    AR completions (by digest; lossless) and take the recorded iterations, prompt by prompt."""
    from workers.training.evaluation import digest

    k, results, recorded = subset_run
    assert [digest(r.token_ids) for r in results] == [p["digest"] for p in recorded]
    assert [r.stats.iterations for r in results] == [p["iterations"][str(k)] for p in recorded]


def test_shipped_demo_acceptance_floor(subset_run):
    """A draft-path regression (the diffusion view seeing less than prefix + anchor + block, a
    wrong mask token, drafts read from the wrong block index) fails this; see ACCEPTANCE_FLOOR."""
    _, results, _ = subset_run
    acceptance = sum(len(r.token_ids) for r in results) / sum(r.stats.iterations for r in results)
    assert acceptance >= ACCEPTANCE_FLOOR, f"acceptance {acceptance:.3f} on the fixed subset, floor {ACCEPTANCE_FLOOR}"


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
