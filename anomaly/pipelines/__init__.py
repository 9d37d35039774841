"""Scheduled pipelines: compositions of the jobs that run unattended (cron, orchestrators).

``train_and_promote`` retrains, compares the new model with the champion and promotes it
when the gate allows; ``score_batch`` scores every new image of an inbox folder with the
champion. Their lock (:mod:`.lock`) and, for scoring, manifest (:mod:`.manifest`) make them
safe to start on a schedule and to kill at any moment.
"""
