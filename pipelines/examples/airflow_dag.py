"""Example Airflow DAG (documentation, not a dependency): nightly retraining, then scoring.

Copy into the DAGs folder of an Airflow installation that can run /srv/anomaly. Each task
is one pipeline command; their exit codes carry the outcome (see pipelines/README.md):
6 (another run holds the lock) marks the task skipped instead of failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

ENV = {"MLFLOW_TRACKING_URI": "http://mlflow.factory.local:5000"}
LOCKED = 6

with DAG(
    dag_id="anomaly_part42",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Both pipelines are idempotent: a retry redoes only what the failed try did not finish.
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    train = BashOperator(
        task_id="train_and_promote",
        bash_command=(
            "/srv/anomaly/pipelines/train_and_promote data.root=/data/part42 "
            "tracking.registered_model=part42"
        ),
        env=ENV,
        append_env=True,
        skip_on_exit_code=LOCKED,
    )
    score = BashOperator(
        task_id="score_batch",
        bash_command=(
            "/srv/anomaly/pipelines/score_batch inbox=/data/inbox/part42 "
            "model=models:/part42@champion processed=move"
        ),
        env=ENV,
        append_env=True,
        skip_on_exit_code=LOCKED,
    )
    train >> score
