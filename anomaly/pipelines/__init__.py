"""Scheduled pipelines: compositions of the jobs that run unattended (cron, orchestrators)."""
