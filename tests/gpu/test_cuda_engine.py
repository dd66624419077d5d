"""GPU checks, run on a CUDA machine with `make test-gpu` (`make test` leaves tests/gpu out:
CI has no GPU). CUDA graphs and compilation must not change
a single token: fp32 greedy on the GPU equals the CPU engine."""
from __future__ import annotations

import pytest
import torch

from tests.workers.conftest import SMALL, random_prompts
from workers.engine import Engine, SamplingParams
from workers.tiny import write_tiny_checkpoint



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("gpu"), init_std=1.0, seed=1, **SMALL)


@pytest.mark.parametrize("fused", [False, True])
def test_graphed_gpu_engine_matches_cpu(ckpt, fused):
    prompts = random_prompts(11, seed=5)
    params = [SamplingParams(max_new_tokens=n, stop_token_ids=(58,), block_size=k)
              for n, k in zip([3, 40, 17, 1, 64, 9, 33, 25, 2, 50, 12], [2, 4, 8, 16, 32, 4, 8, 4, 8, 16, 4])]
    cpu = Engine.from_pretrained(ckpt, max_batch_size=4, max_model_len=128)
    gpu = Engine.from_pretrained(ckpt, device="cuda", max_batch_size=4, max_model_len=128, fused_kernels=fused)
    assert gpu.cuda_graphs
    for mode in ("orthrus", "ar"):
        want = [r.token_ids for r in cpu.generate(prompts, params, mode=mode)]
        assert [r.token_ids for r in gpu.generate(prompts, params, mode=mode)] == want
        assert [r.token_ids for r in gpu.generate(prompts, params, mode=mode)] == want  # replayed graphs


def test_sampling_on_gpu_is_reproducible(ckpt):
    gpu = Engine.from_pretrained(ckpt, device="cuda", max_batch_size=8)
    params = [SamplingParams(max_new_tokens=20, temperature=0.8, top_k=10, seed=s) for s in range(6)]
    a = gpu.generate(random_prompts(6, seed=2), params)
    b = gpu.generate(random_prompts(6, seed=2), params)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
