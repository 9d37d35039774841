"""The registered pyfunc model as a Spark UDF: score millions of images on a cluster.

pyspark is an optional dependency (``pip install pyspark``, with Java 17+); nothing else in
the package imports this module.
"""

from __future__ import annotations

from typing import Any

import mlflow

from anomaly.tracking.store import ensure_store

# What the UDF returns per image (the pyfunc's columns without the full-size mask, which
# is too heavy for a table of millions of rows; write masks with `anomaly score` instead).
RESULT_TYPES = {
    "score": "double",
    "p_value": "double",
    "is_defective": "boolean",
    "n_regions": "long",
    "defect_area_px": "long",
    "error": "string",
}
RESULT_COLUMNS = tuple(RESULT_TYPES)
# MLflow casts each pandas column of a batch to the declared numpy type, which fails for a
# long column holding an unreadable image's null and turns a null boolean into True. So the
# UDF returns doubles and the casts (null where the image could not be read) happen in Spark.
_UDF_TYPE = ", ".join(
    f"{c} {'string' if t == 'string' else 'double'}" for c, t in RESULT_TYPES.items()
)


def score_paths(
    spark: Any, images: Any, model_uri: str, *, tracking_uri: str, path_column: str = "path"
) -> Any:
    """Score a Spark DataFrame of image paths with a logged or registered anomaly model.

    Args:
        spark: The active ``SparkSession``.
        images: A Spark DataFrame with a column of image paths readable by every executor
            (a shared file system or a mounted bucket).
        model_uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or
            ``runs:/<run id>/model``.
        tracking_uri: The MLflow store that resolves ``model_uri``.
        path_column: Name of the path column.

    Returns:
        ``images`` with the columns of :data:`RESULT_COLUMNS` added; an unreadable image has
        its reason in ``error`` and nulls elsewhere, and never fails the job.
    """
    return _score(spark, images, model_uri, tracking_uri, path_column, None)


def score_files(
    spark: Any,
    files: Any,
    model_uri: str,
    *,
    tracking_uri: str,
    path_column: str = "path",
    content_column: str = "content",
) -> Any:
    """Score a Spark DataFrame of encoded image bytes (``spark.read.format("binaryFile")``).

    The executors need no access to the files: the bytes travel in the DataFrame.

    Args:
        spark: The active ``SparkSession``.
        files: A DataFrame with the encoded files (PNG, JPEG, ...) in ``content_column`` and
            their names in ``path_column`` (used in error messages).
        model_uri: As in :func:`score_paths`.
        tracking_uri: The MLflow store that resolves ``model_uri``.
        path_column: Name of the name column.
        content_column: Name of the bytes column.

    Returns:
        ``files`` with the columns of :data:`RESULT_COLUMNS` added.
    """
    return _score(spark, files, model_uri, tracking_uri, path_column, content_column)


def _score(
    spark: Any,
    frame: Any,
    model_uri: str,
    tracking_uri: str,
    path_column: str,
    content_column: str | None,
) -> Any:
    from pyspark.sql import functions as F

    ensure_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    # env_manager="local": executors use the Python environment the job runs in, which
    # must have the anomaly package (the same one that trained the model).
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=_UDF_TYPE, env_manager="local")
    # Every optional input column of the model's schema is passed, empty where unused, so
    # that MLflow does not fill a missing one with NaN.
    content = (F.col(content_column) if content_column else F.lit(None).cast("binary")).alias(
        "content"
    )
    no_image = F.lit(None).cast("array<array<double>>").alias("image")
    scored = frame.withColumn("_anomaly", udf(F.col(path_column).alias("path"), no_image, content))
    read = F.col("_anomaly.error") == F.lit("")
    columns = [
        F.col(f"_anomaly.{c}").alias(c)
        if t == "string"
        else F.when(read, F.col(f"_anomaly.{c}").cast(t)).alias(c)
        for c, t in RESULT_TYPES.items()
    ]
    return scored.select("*", *columns).drop("_anomaly")
