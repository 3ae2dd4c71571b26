"""Benchmark results: one JSON file and one Markdown table, merged across runs.

Every benchmark writes ``Result`` objects; ``save`` merges them by name into
``docs/benchmarks.json`` (other benchmarks' earlier figures are kept, with
their own ``measured_at``) and regenerates ``docs/benchmarks.md``'s table.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
JSON_PATH = DOCS / "benchmarks.json"
MD_PATH = DOCS / "benchmarks.md"
TABLE_START = "<!-- results:start -->"
TABLE_END = "<!-- results:end -->"


@dataclass
class Result:
    """One figure, with its peer's figure measured in the same run."""

    name: str
    value: float
    peer: float | None
    unit: str
    target: str
    n: int
    higher_is_better: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """value / peer (the DESIGN.md convention), or None without a peer."""
        if self.peer in (None, 0):
            return None
        return round(self.value / self.peer, 3)  # type: ignore[operator]


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "python": sys.version.split()[0],
    }


def save(results: list[Result], command: str) -> None:
    """Merge ``results`` into docs/benchmarks.json and rewrite the Markdown table."""
    DOCS.mkdir(exist_ok=True)
    doc: dict[str, Any] = {"results": {}}
    if JSON_PATH.exists():
        doc = json.loads(JSON_PATH.read_text())
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for r in results:
        entry = asdict(r)
        entry.pop("name")
        entry.pop("higher_is_better")
        entry["ratio"] = r.ratio
        entry["measured_at"] = now
        entry["command"] = command
        doc["results"][r.name] = entry
    doc["machine"] = machine()
    doc["command"] = command
    JSON_PATH.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    _write_table(doc)


def replace_block(start_marker: str, end_marker: str, lines: list[str]) -> None:
    """Replace what lies between two markers of docs/benchmarks.md with ``lines``."""
    text = MD_PATH.read_text()
    start, end = text.index(start_marker), text.index(end_marker) + len(end_marker)
    block = "\n".join([start_marker, *lines, end_marker])
    MD_PATH.write_text(text[:start] + block + text[end:])


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"


def _write_table(doc: dict[str, Any]) -> None:
    rows = [
        "| benchmark | value | peer | ratio | unit | target | n |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for name, r in doc["results"].items():
        rows.append(
            f"| `{name}` | {_fmt(r['value'])} | {_fmt(r['peer'])} | "
            f"{_fmt(r['ratio'])} | {r['unit']} | {r['target']} | {r['n']:,} |"
        )
    m = doc["machine"]
    table = "\n".join(
        [
            TABLE_START,
            f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, {m['cpu_model']}.",
            "",
            *rows,
            TABLE_END,
        ]
    )
    text = (
        MD_PATH.read_text() if MD_PATH.exists() else f"# Benchmarks\n\n{TABLE_START}\n{TABLE_END}\n"
    )
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    MD_PATH.write_text(text[:start] + table + text[end:])
