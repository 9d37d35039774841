"""Score a folder of images on Spark with a registered model; write the results as Parquet.

An example job: run it with ``spark-submit`` on a cluster, or plainly with Python for a
local Spark. The images must be readable from every executor (a shared file system), and
the executors need the environment the model was trained with (``anomaly`` installed).

    python pipelines/spark_score.py --model models:/anomaly@champion \\
        --input /data/inbox --output /data/results/scores.parquet \\
        --tracking-uri http://mlflow:5000 [--master local[2]] [--bytes]

One row per image: path, score, p_value, is_defective, n_regions, defect_area_px, error.
"""

from __future__ import annotations

import argparse
import os
import sys

from anomaly.data.folder import list_files
from anomaly.tracking.spark import score_files, score_paths


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, score every image under ``--input``, write ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/anomaly@champion", help="model URI")
    parser.add_argument("--input", required=True, help="folder of images (recursive)")
    parser.add_argument("--output", required=True, help="Parquet folder to write")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's)")
    parser.add_argument("--partitions", type=int, default=None, help="default: 4 x cores")
    parser.add_argument(
        "--bytes",
        action="store_true",
        help="ship the files' bytes in the DataFrame (binaryFile source): executors then "
        "need no access to the input folder",
    )
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is needed to resolve --model")

    from pyspark.sql import SparkSession

    # Executors of a local Spark run this very interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("anomaly-score")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    try:
        # Every visible file gets a row: one the reader refuses (a GIF, a NaN TIFF) gets its
        # reason in the error column instead of passing unseen.
        images, others = list_files(args.input)
        paths = [str(p.resolve()) for p in sorted(images + others)]
        partitions = max(1, min(args.partitions or 4 * spark.sparkContext.defaultParallelism,
                                len(paths)))  # fmt: skip
        if args.bytes:
            files = spark.read.format("binaryFile").load(paths).select("path", "content")
            scored = score_files(
                spark, files.repartition(partitions), args.model, tracking_uri=args.tracking_uri
            )
        else:
            images = spark.createDataFrame([(p,) for p in paths], "path string")
            scored = score_paths(
                spark, images.repartition(partitions), args.model, tracking_uri=args.tracking_uri
            )
        scored.write.mode("overwrite").parquet(args.output)
        print(f"scored {len(paths)} files with {args.model} into {args.output}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
