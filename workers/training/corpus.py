"""The demo model's corpus: Python source that every machine has offline (stdlib + site-packages).

Why this corpus: no data set can be downloaded here, but every machine with Python carries
hundreds of megabytes of real, varied code. The split is by whole top-level package
(`numpy`, `email`, `torch`, ...), so evaluation never sees a file of a package it trained on
(issue 4): held-out packages are drawn in a seeded hash order until they hold at least
`min_heldout_files` files; vendored copies of a held-out package (a path component equal to its
name, e.g. `pip/_vendor/packaging`) and byte-identical duplicates of held-out files are dropped
from training. Every step is sorted or seeded, so the same machine gives the same split; a
different machine (other packages installed) gives a different but equally honest one.

The corpus is not a file we ship: build it where you train (`jobs/build_demo.py` runs this on the
GPU machine, from that machine's own site-packages).
"""
from __future__ import annotations

import hashlib
import os
import random
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MIN_FILE_BYTES = 256  # empty __init__.py files and stubs teach nothing
MAX_FILE_BYTES = 256_000  # generated tables and vendored blobs would dominate the byte budget
SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", ".git"}


@dataclass(frozen=True)
class SourceFile:
    """One .py file: `package` is its top-level package (the unit of the train/held-out split)."""

    path: Path
    relpath: str  # path below its root, '/'-separated: stable across machines with the same layout
    package: str
    size: int


@dataclass(frozen=True)
class Split:
    train: list[SourceFile]
    heldout: list[SourceFile]
    heldout_packages: list[str]


def default_roots() -> list[Path]:
    """The interpreter's stdlib and every site-packages folder, resolved, deduplicated, sorted."""
    paths = sysconfig.get_paths()
    candidates = [paths["stdlib"], paths["purelib"], paths["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        candidates.append(site.getusersitepackages())
    roots = {Path(c).resolve() for c in candidates if c and Path(c).is_dir()}
    return sorted(roots)


def list_files(roots: list[Path], exclude: tuple[Path, ...] = ()) -> list[SourceFile]:
    """All .py files under `roots` within the size limits, sorted by (package, relpath).

    Symbolic links are not followed and nested site-packages folders are skipped (each is a root
    of its own), so no file is listed twice; `exclude` drops folders (e.g. this repository). One
    scandir per folder and no per-file resolve: a sandboxed file system makes each syscall dear.
    """
    excluded = {str(p.resolve()) for p in exclude}
    files: list[SourceFile] = []

    def walk(folder: str, root: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if e.name not in SKIP_DIRS and not e.name.endswith((".dist-info", ".egg-info")) and e.path not in excluded:
                    walk(e.path, root)
            elif e.name.endswith(".py") and e.is_file(follow_symlinks=False):
                size = e.stat(follow_symlinks=False).st_size
                if MIN_FILE_BYTES <= size <= MAX_FILE_BYTES:
                    rel = os.path.relpath(e.path, root).replace(os.sep, "/")
                    package = rel.split("/", 1)[0].removesuffix(".py")
                    files.append(SourceFile(path=Path(e.path), relpath=rel, package=package, size=size))

    for root in roots:
        walk(str(root), str(root))
    files.sort(key=lambda f: (f.package, f.relpath, str(f.path)))
    return files


def _rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def content_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def split_by_package(files: list[SourceFile], *, min_heldout_files: int = 1000, heldout_fraction: float = 0.05,
                     max_package_share: float = 0.1, seed: int = 0) -> Split:
    """Hold out whole packages, in seeded hash order, until enough files are held out.

    A package holding more than `max_package_share` of all files is never held out: one giant
    (torch, say) would otherwise take most of the training data with it. Training then loses
    vendored copies and byte-identical duplicates of held-out files (see module docstring).
    """
    by_package: dict[str, list[SourceFile]] = {}
    for f in files:
        by_package.setdefault(f.package, []).append(f)
    target = max(min_heldout_files, int(heldout_fraction * len(files)))
    heldout_packages: list[str] = []
    count = 0
    for name in sorted(by_package, key=lambda n: _rank(n, seed)):
        if count >= target:
            break
        if len(by_package[name]) > max_package_share * len(files) or name.startswith("_"):
            continue
        heldout_packages.append(name)
        count += len(by_package[name])
    if count < min_heldout_files:
        raise ValueError(f"only {count} files could be held out (need {min_heldout_files}): corpus too small")
    held = set(heldout_packages)
    heldout = [f for f in files if f.package in held]
    held_hashes = {content_hash(f.path) for f in heldout}
    held_sizes = {f.size for f in heldout}  # only a file of a held-out size can be a copy: hash those alone
    train = []
    for f in files:
        if f.package in held or held.intersection(f.relpath.split("/")[:-1]):
            continue
        if f.size in held_sizes and content_hash(f.path) in held_hashes:
            continue
        train.append(f)
    return Split(train=train, heldout=heldout, heldout_packages=sorted(heldout_packages))


def sample_files(files: list[SourceFile], max_bytes: int, seed: int) -> list[SourceFile]:
    """A seeded shuffle of `files`, cut once `max_bytes` is reached (deterministic for a given list)."""
    order = list(files)
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for f in order:
        if total >= max_bytes:
            break
        out.append(f)
        total += f.size
    return out


def read_text(f: SourceFile) -> str | None:
    """The file as text, or None when it is not UTF-8 (a few test fixtures are latin-1 on purpose)."""
    try:
        return f.path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
