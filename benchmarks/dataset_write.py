"""The final write of a large output alone: one ordered DuckDB `COPY` to a single Parquet file (what the ledger
path does for `-o out.parquet`) against the same ordered `SELECT` streamed into a dataset folder
(`vidcap.dataset.write`, what `-o out/` does), over N caption-like rows (a path, a label, a ~130-character
caption that does not compress away, a few numbers, status and error).

usage: nice -n 10 python benchmarks/dataset_write.py N [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    import duckdb

    from vidcap import dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--dir", default="/tmp/vidcap-dataset-write")
    args = ap.parse_args()
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET memory_limit='1GB'")
    con.execute(f"SET temp_directory='{work / 'spill'}'")
    con.execute("SET preserve_insertion_order=true")
    con.execute(f"""CREATE TABLE t AS SELECT i AS pos, '/data/clips/' || (i % 1000) || '/v' || i || '.mp4' AS path,
        'label ' || (i % 97) AS label, 'The video shows ' || md5(i::VARCHAR) || ' walking past ' ||
        md5((i * 7)::VARCHAR) || ' in a ' || md5((i * 13)::VARCHAR)[:12] || ' room.' AS text,
        8 AS num_frames, 24.0 AS fps, 1280 AS width, 720 AS height, 'ok' AS status, '' AS error
        FROM range({args.n}) r(i)""")
    sql = "SELECT * EXCLUDE (pos) FROM t ORDER BY pos"
    out: dict = {"rows": args.n}
    for kind in ("file", "dataset"):
        t0, c0 = time.monotonic(), time.process_time()
        if kind == "file":
            con.execute(f"COPY ({sql}) TO '{work / 'one.parquet'}' (FORMAT parquet, COMPRESSION zstd)")
            size = (work / "one.parquet").stat().st_size
            files = 1
        else:
            rel = con.sql(sql)
            reader = (getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader)(65_536)
            info = dataset.write(work / "many", reader, reader.schema)
            size, files = sum(f["bytes"] for f in info["files"]), len(info["files"])
        out[kind] = {
            "wall_s": round(time.monotonic() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "mb": round(size / 2**20),
            "files": files,
        }
        print(kind, out[kind], flush=True)
    print(json.dumps(out))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
