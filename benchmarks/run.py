"""``make bench``: run benchmarks side by side with their peers; write docs/benchmarks.*.

Usage: python -m benchmarks.run [--only dataplane,...] [--records N] [--bases 0,100000,300000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the MinIO harness lives with the tests

from minio_server import MinioServer, minio_binary, s3_env  # noqa: E402

SCALING_START = "<!-- scaling:start -->"
SCALING_END = "<!-- scaling:end -->"


def write_scaling(scaling: dict[str, object]) -> None:
    """Record the compaction-vs-base-size curve in docs/benchmarks.md."""
    rows = [
        "| base records | compaction s | downloaded MB | uploaded MB | apply s | upload s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in scaling["rows"]:  # type: ignore[attr-defined]
        rows.append(
            f"| {r['base_records']:,} | {r['seconds']:.1f} | "
            f"{r['downloaded_bytes'] / 1e6:.0f} | {(r['uploaded_bytes'] or 0) / 1e6:.0f} | "
            f"{r['steps_seconds'].get('apply', 0):.1f} | "
            f"{r['steps_seconds'].get('upload', 0):.1f} |"
        )
    block = "\n".join(
        [
            SCALING_START,
            f"Fixed delta: {scaling['delta_records']:,} records; "
            "compactor cache cold (as in a CronJob pod).",
            "",
            *rows,
            SCALING_END,
        ]
    )
    text = report.MD_PATH.read_text()
    start, end = text.index(SCALING_START), text.index(SCALING_END) + len(SCALING_END)
    report.MD_PATH.write_text(text[:start] + block + text[end:])
    data = json.loads(report.JSON_PATH.read_text())
    data["compaction_scaling"] = scaling
    report.JSON_PATH.write_text(json.dumps(data, indent=2) + "\n")


def main() -> int:
    """Parse arguments, start MinIO, run the chosen benchmarks, save results."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--only",
        default="dataplane,servers,operator",
        help="comma list of: dataplane, servers, operator",
    )
    p.add_argument("--records", type=int, default=100_000, help="headline record count")
    p.add_argument(
        "--bases",
        default="0,100000,300000",
        help="base sizes for the scaling curve (empty: skip it)",
    )
    p.add_argument(
        "--serving-records", type=int, default=10_000, help="snapshot size for `servers`"
    )
    args = p.parse_args()
    command = "make bench  # python -m benchmarks.run " + " ".join(sys.argv[1:])
    os.environ.update(s3_env())
    os.environ.setdefault("CHROMASNAP_NO_PROGRESS", "1")
    only = set(args.only.split(","))
    with MinioServer(minio_binary()) as minio:
        if "dataplane" in only:
            from benchmarks import dataplane

            bases = [int(b) for b in args.bases.split(",") if b]
            results, scaling = dataplane.run(
                minio.endpoint, minio.new_bucket_url, args.records, bases
            )
            report.save(results, command)
            if scaling is not None:
                write_scaling(scaling)
        if "servers" in only:
            from benchmarks import servers

            served = servers.run(minio.endpoint, minio.new_bucket_url, args.serving_records)
            report.save(served, command)
            servers.write_profile(served)
    if "operator" in only:
        # its own control plane (built by hack/build-tools.sh); no MinIO: no pod runs
        from benchmarks import operator as operator_bench

        report.save(operator_bench.run(), command)
    print(f"results written to {report.JSON_PATH} and {report.MD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
