"""README figures come from committed raw files (issue 10 item 6).

Rule: a table in a figures section of README.md (`SECTIONS`) carries a comment on the line above
it naming the raw files of the run it reports,

    <!-- figures: bench/results/2026-12-01_pipeline_scale_20000x20.json [more files] -->

and every number in the table's body (thousands separators and units dropped: `2,568`, `39 s`,
`224 MiB`) appears in one of those files, as written or as a file number rounded to the same
decimals (the README may round 39.4 to 39); a `yes`/`no` cell needs a `true`/`false` in them.
Named files must exist, be non-empty and be tracked by git; no file under bench/results is empty.
To add a table (e.g. the GPU speed tables of a new run), commit the run's JSON or log under
bench/results/ and put the comment above the table. Fast, no Ray, no torch.

Planted in README.md, one at a time (each failed, the committed README passes): run A's batch-1
AR step edited from 8.17 to 8.19 ('8.19' appears in no file of the three logs); the scale table's
263.2 rows/s edited to 2,632; the scale table's figures comment removed; and the empty
bench/results/2026-11-29_h200_gpu_tests_fused.log (now deleted) fails the empty-file check.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("## GPU speed", "## Scale benchmark")  # every table under these headings needs a source
MARKER = re.compile(r"<!--\s*figures:\s*(.*?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def sections(text: str) -> dict[str, list[str]]:
    """Lines of each `## ` section, keyed by its heading line."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def tables(lines: list[str]) -> list[tuple[str | None, list[list[str]]]]:
    """(figures comment or None, body rows as cell lists) for each Markdown table in lines."""
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| :]+\|$", lines[i + 1].strip()):
            above = lines[i - 1].strip() if i > 0 else ""
            m = MARKER.fullmatch(above)
            j = i + 2
            rows = []
            while j < len(lines) and lines[j].startswith("|"):
                rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            found.append((m.group(1) if m else None, rows))
            i = j
        else:
            i += 1
    return found


def numbers_in(text: str) -> list[str]:
    return [n.replace(",", "") for n in NUMBER.findall(text)]


def file_numbers(path: Path) -> tuple[list[float], set[bool]]:
    text = path.read_text()
    values, flags = [], set()
    if path.suffix == ".json":
        def walk(x):
            if isinstance(x, bool):
                flags.add(x)
            elif isinstance(x, (int, float)):
                values.append(float(x))
            elif isinstance(x, dict):
                for v in x.values():
                    walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
            elif isinstance(x, str):
                values.extend(float(n) for n in numbers_in(x))
        walk(json.loads(text))
    else:
        values = [float(n) for n in numbers_in(text)]
        flags = {b for b, word in ((True, "true"), (False, "false")) if word in text.lower()}
    return values, flags


def matches(cell_number: str, values: list[float]) -> bool:
    decimals = len(cell_number.split(".")[1]) if "." in cell_number and "e" not in cell_number.lower() else 0
    x = float(cell_number)
    return any(round(v, decimals) == x or v == x for v in values)


def tracked(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    res = subprocess.run(["git", "ls-files", "--error-unmatch", rel], cwd=ROOT, capture_output=True)
    return res.returncode == 0


def sourced_tables():
    out = []
    for heading, lines in sections(README.read_text()).items():
        if heading.startswith(SECTIONS):
            out.extend((heading, src, rows) for src, rows in tables(lines))
    return out


def test_every_figures_table_names_its_raw_files():
    found = sourced_tables()
    assert found, f"no tables under {SECTIONS}"
    for heading, src, _ in found:
        assert src, f"{heading}: a table without a <!-- figures: ... --> comment above it"
        for name in src.split():
            path = ROOT / name
            assert path.is_file() and path.stat().st_size > 0, f"{heading}: {name} is missing or empty"
            assert tracked(path), f"{heading}: {name} is not committed"


@pytest.mark.parametrize("heading, src, rows", sourced_tables(), ids=lambda x: x if isinstance(x, str) and x.startswith("#") else "")
def test_table_numbers_appear_in_their_raw_files(heading, src, rows):
    if not src:
        pytest.fail(f"{heading}: table without a figures comment")
    values, flags = [], set()
    for name in src.split():
        v, f = file_numbers(ROOT / name)
        values += v
        flags |= f
    missing = []
    for row in rows:
        for cell in row:
            for n in numbers_in(cell):
                if not matches(n, values):
                    missing.append(n)
            if cell.lower() in ("yes", "no") and (cell.lower() == "yes") not in flags:
                missing.append(cell)
    assert not missing, f"{heading}: {missing} appear in no file of {src}"


def test_no_empty_file_under_bench_results():
    empty = [p.name for p in (ROOT / "bench" / "results").iterdir() if p.is_file() and p.stat().st_size == 0]
    assert not empty, empty


def test_the_rule_catches_a_number_that_is_not_in_the_file(tmp_path):
    """The checks themselves: a table whose figure was edited by hand fails."""
    raw = tmp_path / "r.json"
    raw.write_text(json.dumps({"rows": 20000, "seconds": 39.4, "rows_per_s": 2568.3, "ok": True}))
    values, flags = file_numbers(raw)
    assert all(matches(n, values) for n in ("20000", "39", "39.4", "2568"))
    assert not matches("41", values) and not matches("2569", values) and not matches("39.5", values)
    assert True in flags and False not in flags
    md = ["<!-- figures: x.json -->", "| rows | wall |", "|---|---|", "| 20,000 | 39 s |", "", "| a |", "|---|", "| 1 |"]
    assert tables(md) == [("x.json", [["20,000", "39 s"]]), (None, [["1"]])]
    assert numbers_in("| 1,000,000 | 2.5x | 224 MiB | K = 32 |") == ["1000000", "2.5", "224", "32"]
