"""JobConfig: the YAML job file, validated at the edge so a typo fails before any GPU time.

Every field is documented here (this file is the reference; README.md renders the same table).
Errors name the dotted key and what is wrong with it, for the YAML file and for `--set` alike.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.draft_length import read_rows  # torch-free: the pass-cost JSON's one reader


class ConfigError(ValueError):
    """A job file or override that does not validate; the message names every bad key."""


class _Section(BaseModel):
    # strict: YAML's `true` is not the integer 1, nor "1" a number (issue 13); ints still pass as floats.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SamplingColumns(_Section):
    """Optional per-row overrides of the sampling defaults, read from input columns."""

    max_new_tokens: str | None = Field(None, description="Column with each row's max_new_tokens.")
    temperature: str | None = Field(None, description="Column with each row's temperature (0 = greedy).")
    top_k: str | None = Field(None, description="Column with each row's top_k (0 = off).")
    top_p: str | None = Field(None, description="Column with each row's top_p (1 = off).")
    seed: str | None = Field(None, description="Column with each row's sampling seed.")

    def columns(self) -> dict[str, str]:
        """{sampling parameter: input column} for the columns that are set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class InputConfig(_Section):
    path: str = Field(..., description="Parquet input: a file, a directory, a glob (`data/*.parquet`) or an "
                                       "`s3://bucket/prefix`. Each file is one shard. Relative paths are "
                                       "relative to the working directory.")
    prompt_column: str | None = Field(None, description="Column holding the prompt text. Set exactly one of "
                                                        "prompt_column and messages_column.")
    messages_column: str | None = Field(None, description="Column holding chat messages: a list of "
                                                          "{role, content} structs (or their JSON text).")
    id_column: str | None = Field(None, description="Column holding a row id (kept as text). Without it the "
                                                    "id is `<file name>:<16 hex digits>`, a hash of the file "
                                                    "path and row position that is stable across reruns.")
    sampling_columns: SamplingColumns = Field(default_factory=SamplingColumns,
                                              description="Per-row sampling columns; null cells use the "
                                                          "defaults in `sampling`.")
    on_bad_file: Literal["error", "skip"] = Field(
        "error", description="A file that is not readable Parquet, is empty (0 bytes) or lacks a needed column: "
                             "error = stop before Ray starts, naming the file; skip = leave it out and list it "
                             "under `skipped_files` in summary.json and the printed summary.")
    duplicate_ids: Literal["error", "allow"] = Field(
        "error", description="With id_column: error = the first row with an id (shard order, then row order) "
                             "runs and every later row with the same id gets `error` set (the driver reads the "
                             "id column of every shard before Ray starts); allow = no check.")

    @model_validator(mode="after")
    def _one_prompt_source(self) -> "InputConfig":
        if (self.prompt_column is None) == (self.messages_column is None):
            raise ValueError("set exactly one of prompt_column and messages_column")
        return self


class ModelSection(_Section):
    path: str = Field(..., description="Checkpoint: a local folder (config.json, safetensors, tokenizer) or a "
                                       "Hugging Face hub id, fetched by each worker into its HF cache.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights and activations dtype; auto = bfloat16 on CUDA, float32 on CPU.")


class EngineSection(_Section):
    mode: Literal["orthrus", "ar"] = Field("orthrus", description="orthrus: diffusion drafts verified by the AR "
                                                                   "view; ar: plain one-token-per-step decoding.")
    block_size: int | None = Field(None, ge=2, description="Draft block size K (Orthrus mode; at least 2); "
                                                           "null = chosen per iteration from engine.pass_costs, "
                                                           "or the checkpoint's block_size when pass_costs is off.")
    max_batch_size: int = Field(64, ge=1, description="Most sequences the engine decodes at once.")
    max_model_len: int = Field(4096, ge=2, description="Most tokens (prompt + completion) per sequence; a longer "
                                                       "prompt gets an `error` or is truncated (`prompt.too_long`).")
    cuda_graphs: bool | None = Field(None, description="Replay decode steps as CUDA graphs; null = on when the "
                                                       "actor runs on CUDA.")
    pass_costs: str = Field("auto", description="auto: each actor measures what an iteration costs on its own "
                                                "device (batch sizes x block sizes x contexts, within ~40 s on a "
                                                "GPU, ~10 s on a CPU) and caches it on local disk; off: no "
                                                "measurement, K = block_size or the checkpoint's; or a "
                                                "bench/engine_speed.py result (JSON with `pass_costs` rows). With "
                                                "costs and no block_size, K is chosen per iteration from the "
                                                "costs and the acceptance seen so far, AR where that is faster "
                                                "(workers/draft_length.py).")
    kv_cache_memory_fraction: float = Field(0.9, gt=0, le=1, description="CUDA: share of the GPU's memory for the "
                                                                         "weights, activations and the paged KV "
                                                                         "pool (sized after a warm-up forward).")
    kv_cache_tokens: int | None = Field(None, ge=2, description="An explicit KV pool size in tokens instead of "
                                                                "kv_cache_memory_fraction; on the CPU the default "
                                                                "is max_batch_size full rows.")
    max_concurrent_batches: int = Field(4, ge=1, description="Ray batches one actor serves at once, all feeding "
                                                             "one engine, so the next batch's rows join as slots "
                                                             "free up instead of waiting for the last row.")

    @field_validator("pass_costs")
    @classmethod
    def _pass_costs_readable(cls, path: str) -> str:
        if path in ("auto", "off"):
            return path
        try:
            read_rows(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read pass costs from {path!r}: {e}") from None
        return os.path.abspath(path)


class SamplingSection(_Section):
    max_new_tokens: int = Field(256, ge=1, description="Most tokens to generate per row.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 = greedy.")
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 = off.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 = off.")
    seed: int = Field(0, ge=0, description="Base seed; each row samples with a seed derived from this and its "
                                           "id (or from its seed column), so results do not depend on batching.")


class PromptSection(_Section):
    chat_template: bool = Field(True, description="Wrap prompts in the checkpoint's chat template (a prompt "
                                                  "becomes one user message); false = raw completion.")
    enable_thinking: bool = Field(False, description="Passed to Qwen3's chat template: false inserts the empty "
                                                     "think block, so the model answers directly.")
    too_long: Literal["error", "truncate"] = Field(
        "error", description="A prompt that leaves no room in engine.max_model_len: error = the row gets `error`; "
                             "truncate = drop tokens from the start of the prompt (after the chat template) so "
                             "that prompt + the row's max_new_tokens fit, keeping the end of the prompt.")


class ResourcesSection(_Section):
    num_workers: int | None = Field(None, ge=1, description="Engine actors; null = one per GPU in the cluster, "
                                                            "or 1 without GPUs.")
    gpus_per_worker: float | None = Field(None, ge=0, description="GPUs per actor; null = 1 when the cluster has "
                                                                  "GPUs, else 0 (the engine runs on the CPU).")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs reserved per actor. Fractional by default so "
                                                          "actors never take every CPU and starve the read and "
                                                          "write tasks (that hangs silently).")
    batch_size: int = Field(256, ge=1, description="Rows per engine call; also the unit of progress and of "
                                                   "output files (one file per batch and shard).")
    max_restarts: int = Field(4, ge=-1, description="Times Ray restarts an engine actor whose process died (-1 = "
                                                    "no limit); its batch is retried on the new actor.")
    max_task_retries: int = Field(4, ge=-1, description="Times one batch is retried after its actor died (-1 = no "
                                                        "limit). Finite, so a batch that kills every actor fails "
                                                        "the job instead of looping.")


class OutputSection(_Section):
    path: str = Field(..., description="Output folder (local or s3://): outputs/, stats/shards.parquet and "
                                       "summary.json go under it.")
    overwrite: bool = Field(False, description="Delete earlier outputs/, stats/, done/, job.json and summary.json "
                                               "under path first; false = refuse to run when outputs/ has files "
                                               "(unless resume).")
    resume: bool = Field(False, description="Finish an earlier run of the same job in this folder: shards it "
                                            "completed are kept and not rerun; the files of shards it left "
                                            "partial are deleted and those shards run again.")


class JobConfig(_Section):
    name: str = Field("job", description="A label for logs and summary.json.")
    input: InputConfig = Field(..., description="What to read.")
    model: ModelSection = Field(..., description="Which checkpoint.")
    engine: EngineSection = Field(default_factory=EngineSection, description="How to decode.")
    sampling: SamplingSection = Field(default_factory=SamplingSection, description="Default sampling.")
    prompt: PromptSection = Field(default_factory=PromptSection, description="How prompts become tokens.")
    resources: ResourcesSection = Field(default_factory=ResourcesSection, description="Actors and batches.")
    output: OutputSection = Field(..., description="Where results go.")
    ray_address: str | None = Field(None, description="Ray cluster to join; `local` = always start a new local "
                                                      "Ray; null = RAY_ADDRESS, or a cluster already running on this "
                                                      "machine, else a new local one.")
    progress_interval_s: float = Field(10.0, gt=0, description="Seconds between progress lines.")

    @model_validator(mode="after")
    def _messages_need_template(self) -> "JobConfig":
        if self.input.messages_column and not self.prompt.chat_template:
            raise ValueError("input.messages_column needs prompt.chat_template=true")
        if self.output.overwrite and self.output.resume:
            raise ValueError("set at most one of output.overwrite and output.resume")
        return self


# Keys that may change between a run and its resume: they do not change what a row's output is.
RESUMABLE_CHANGES = ("name", "resources", "output", "ray_address", "progress_interval_s")


def resume_key(config: JobConfig) -> dict[str, Any]:
    """The part of a config that must match for `output.resume` to continue an earlier run."""
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at `loc` (to list the choices after an unknown key)."""
    model: Any = JobConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return sorted(model.model_fields)


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = ", ".join(_known_keys(e["loc"][:-1]))
            lines.append(f"{key}: unknown key (known here: {known})")
        elif e["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
            lines.append(f"{key}: {e['msg']}{got}")
    return "; ".join(lines)


def build_config(raw: dict[str, Any], source: str = "job") -> JobConfig:
    """Validate a plain dict; raise ConfigError naming each bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a job must be a mapping of keys, got {type(raw).__name__}")
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `key.sub=value` override in place; the value is parsed as YAML (`0.5`, `true`, `null`)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. engine.mode=ar")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML ({err.problem})") from None
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}: {where} is a value ({child!r}), not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobConfig:
    """Read a job YAML, apply `--set` overrides in order, and validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read job file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return build_config(raw, source=str(path))
