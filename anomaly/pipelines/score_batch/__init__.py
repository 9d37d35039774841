"""``score_batch``: score every new image of an inbox folder with the champion model.

Meant to be started by a scheduler (cron, systemd timer) as often as wanted. Each run:

1. takes the inbox's lock (``<inbox>/.score_batch/lock``; a live holder: exit 6);
2. lists the inbox and hashes each image (sha256 of its bytes). An image is identified by
   its path and hash: a path never seen is *new*, a path seen with another hash is
   *changed* (scored again, a new row), the same content under a new path is new too;
3. resolves the model once (``models:/<name>@champion`` by default) and scores the new and
   changed images batch by batch. For each batch the PNGs are written first (atomically),
   then the batch's records are appended to the manifest
   (``<inbox>/.score_batch/manifest.jsonl``): from that moment an image is *committed*;
4. with ``processed=move``, moves committed images to the done folder;
5. rebuilds ``scores.csv``, ``regions.csv`` and ``errors.csv`` of the results folder from
   the manifest (atomically) and logs one MLflow run.

The manifest is the single source of truth, so a run killed at any moment loses nothing
and counts nothing twice: its uncommitted images are simply scored by the next run, which
also finishes what the killed one left (tables not yet rebuilt, committed images not yet
moved, temporary files of writes it cut short).

Fault injection: the config option ``debug.pause_at=<phase>:<n>[:<seconds>]`` (null by
default) makes the run stop (sleep for an hour, or ``seconds``, to be killed there or to
let something happen meanwhile) at the ``n``-th batch (1-based) at one of the phases
``after_pictures`` (PNGs written, records not yet committed), ``mid_commit`` (the batch's
manifest lines written and synced up to the middle of the last one) or ``after_commit``
(committed, not yet moved), after logging ``debug: paused at <phase>:<n>``. The tests
kill runs there to show that a kill at any of those moments loses nothing.
"""

from anomaly.pipelines.score_batch.files import (
    DONE_ORPHAN_AGE_S,
    move_file,
    remove_orphans,
    write_tables,
)
from anomaly.pipelines.score_batch.plan import (
    STATE_DIR,
    Settings,
    inbox_files,
    plan_run,
    settings_from,
)
from anomaly.pipelines.score_batch.run import score_batch

__all__ = [
    "DONE_ORPHAN_AGE_S",
    "STATE_DIR",
    "Settings",
    "dry_run",
    "inbox_files",
    "move_file",
    "plan_run",
    "remove_orphans",
    "score_batch",
    "settings_from",
    "write_tables",
]
