"""``make bench``: run benchmarks side by side with their peers; write docs/benchmarks.*.

Usage: python -m benchmarks.run [--only dataplane,segments,...] [--records N]
       [--segment-records N]

``--only readpath`` runs the read-path figures at their default sizes; for other
sizes run ``python -m benchmarks.readpath --help`` directly.
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
INGEST_START = "<!-- ingest:start -->"
INGEST_END = "<!-- ingest:end -->"


def write_scaling(scaling: dict[str, object]) -> None:
    """Record the compaction-vs-base-size curve and the ingest's rounds in docs/benchmarks.md."""
    rows = [
        "| base records | run | compaction s | downloaded MB | uploaded MB |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for r in scaling["rows"]:  # type: ignore[attr-defined]
        rows.append(
            f"| {r['base_records']:,} | {r['kind']} | {r['seconds']:.1f} | "
            f"{r['downloaded_bytes'] / 1e6:.1f} | {(r['uploaded_bytes'] or 0) / 1e6:.1f} |"
        )
    report.replace_block(SCALING_START, SCALING_END, [
        f"Fixed delta: {scaling['delta_records']:,} records; "
        "compactor cache cold (as in a CronJob pod).", "", *rows])
    ingest = [
        "| round | records after | run | merged segments | segments after | uploaded MB "
        "| downloaded MB | s | version MB |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in scaling["ingest"]:  # type: ignore[attr-defined]
        ingest.append(
            f"| {r['round']} | {r['records']:,} | {r['kind']} | {r['segments_merged']} | "
            f"{r['segments']} | {r['uploaded_bytes'] / 1e6:.1f} | "
            f"{r['downloaded_bytes'] / 1e6:.1f} | {r['seconds']:.1f} | "
            f"{r['version_bytes'] / 1e6:.1f} |"
        )
    report.replace_block(INGEST_START, INGEST_END, ingest)
    data = json.loads(report.JSON_PATH.read_text())
    data["compaction_scaling"] = scaling
    report.JSON_PATH.write_text(json.dumps(data, indent=2) + "\n")


def main() -> int:
    """Parse arguments, start MinIO, run the chosen benchmarks, save results."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--only",
        default="dataplane,segments,servers,readpath,catalog,pool,operator,database",
        help="comma list of: dataplane, segments, servers, readpath, catalog, pool, operator, "
        "database",
    )
    p.add_argument("--records", type=int, default=100_000, help="headline record count")
    p.add_argument(
        "--segment-records", type=int, default=300_000,
        help="records the segment benchmarks ingest (in 30 rounds)",
    )
    p.add_argument(
        "--serving-records", type=int, default=10_000, help="snapshot size for `servers`"
    )
    p.add_argument("--pool-collections", type=int, default=10_000,
                   help="collections the pool benchmark creates")
    args = p.parse_args()
    command = "make bench  # python -m benchmarks.run " + " ".join(sys.argv[1:])
    os.environ.update(s3_env())
    os.environ.setdefault("CHROMASNAP_NO_PROGRESS", "1")
    only = set(args.only.split(","))
    with MinioServer(minio_binary()) as minio:
        if "dataplane" in only:
            from benchmarks import dataplane

            results = dataplane.run(minio.endpoint, minio.new_bucket_url, args.records)
            report.save(results, command)
        if "segments" in only:
            import tempfile

            from benchmarks import segments

            with tempfile.TemporaryDirectory(prefix="chromasnap-bench-segments-") as tmp:
                seg_results, scaling = segments.run(
                    minio.endpoint, minio.new_bucket_url, args.segment_records, Path(tmp))
            report.save(seg_results, command)
            write_scaling(scaling)
        if "servers" in only:
            from benchmarks import servers

            served = servers.run(minio.endpoint, minio.new_bucket_url, args.serving_records)
            report.save(served, command)
            servers.write_profile(served)
        if "readpath" in only:
            from benchmarks import readpath

            read_results = readpath.run(minio.endpoint, minio.new_bucket_url)
            report.save(read_results, command)
            readpath.write_markdown(read_results, command)
        if "catalog" in only:
            from benchmarks import catalog

            report.save(catalog.run(minio.endpoint, minio.new_bucket_url), command)
        if "pool" in only:
            from benchmarks import pool

            report.save(pool.run(minio.endpoint, minio.new_bucket_url, args.pool_collections),
                        command)
        if "database" in only:
            # its own control plane; the pool's pod runs as a local process on this MinIO
            from benchmarks import operator as operator_bench

            report.save(operator_bench.run_database(minio), command)
    if "operator" in only:
        # its own control plane (built by hack/build-tools.sh); no MinIO: no pod runs
        from benchmarks import operator as operator_bench

        report.save(operator_bench.run(), command)
    print(f"results written to {report.JSON_PATH} and {report.MD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
