"""Scheduled pipelines: compositions of the scoring and tracking steps that cron runs.

``score_batch`` scores every new image of an inbox folder with the champion model; its
lock (:mod:`.lock`) and manifest (:mod:`.manifest`) make it safe to start on a schedule and
to kill at any moment.
"""
