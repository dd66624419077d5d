"""Inputs for `make demo`: a tiny random Orthrus model and a few prompt shards, built if missing.

    python -m jobs.make_demo [--out build/demo]

The model is a stand-in until the trained demo model ships (then `make demo` uses demo/model);
it proves the pipeline, not the quality of its text. Two prompts are bad on purpose (null and
empty) to show the `error` column.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = ["reverse a string", "sum a list of numbers", "check whether a number is prime", "merge two sorted lists",
          "count words in a text", "flatten a nested list", "compute a factorial", "parse a date string",
          "remove duplicates from a list", "find the largest element", "convert Celsius to Fahrenheit",
          "read a CSV file", "compute a moving average", "validate an email address", "transpose a matrix",
          "compute the GCD of two numbers"]
SHARDS = 4


def write_prompt_shards(folder: Path) -> list[Path]:
    """SHARDS files of 16 rows (`id`, `prompt`); shard 0 also holds a null and an empty prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(SHARDS):
        prompts: list[str | None] = [f"Write a Python function to {t}." for t in TOPICS[s::SHARDS]] * 4
        if s == 0:
            prompts[-2:] = [None, ""]
        path = folder / f"prompts-{s:05d}.parquet"
        ids = [f"demo-{s}-{i}" for i in range(len(prompts))]
        pq.write_table(pa.table({"id": ids, "prompt": pa.array(prompts, pa.string())}), path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo", help="folder for model/ and prompts/")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not (out / "model" / "config.json").exists():
        from workers.tiny import write_tiny_checkpoint

        write_tiny_checkpoint(out / "model", seed=0)
        print(f"built tiny demo model: {out / 'model'}")
    if not (out / "prompts").exists():
        write_prompt_shards(out / "prompts")
        print(f"wrote demo prompts: {out / 'prompts'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
