"""GPU-side code of orthrus-batch: the Qwen3/Orthrus model, its KV cache and the decoding engine.

Imported as `workers` (not a PyPI package of that name): install this project, or run from its root.
"""
