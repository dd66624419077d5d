"""Training and demo building: heads' loss, one training loop, checkpoint writing, self-distillation,
the demo corpus, tokenizer, prompts and evaluation.

The inference path (workers/engine.py, model.py, actor.py, ...) never imports this package
(tests/jobs/test_train_heads.py checks it); training imports inference (the model, the loader,
and the engine for self-distillation), never the other way. This file imports nothing, so
Loop and empty-completion rates live in workers/metrics.py (torch-free: the driver reports them).

- `loop.py`: the schedule, random windows, bf16 autocast, and the one training loop + its CLI options;
- `base.py`: the AR-view base model (init, LM loss, `train_base`);
- `diffusion_loss.py`: the heads' math (block layout, the packed-blocks mask, the KL step);
- `heads.py`: adding, freezing, loading and training the `*_diff` heads (`train_heads`);
- `self_distill.py`: the base model's own continuations (engine, AR mode);
- `checkpoint.py`: safetensors writing (sharded), base and Orthrus checkpoints;
- `corpus.py`, `tokenizer.py`, `prompts.py`, `demo_build.py`: the demo model's data and build;
- `evaluation.py`: the demo evaluation (loop and empty-completion figures come from workers/metrics.py).
"""
