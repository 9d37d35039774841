"""The ``anomaly`` command line: :func:`main` dispatches to one command per job.

- ``app``: ``main``, Hydra, sweeps and DDP restarts;
- ``checks``: what is checked before a command composes its config;
- ``commands``: each command, running its job and printing its result;
- ``printers``: the tables, progress bars and exit codes they print.
"""

from anomaly.cli.app import main, run_command
from anomaly.cli.checks import config_dir

__all__ = ["config_dir", "main", "run_command"]
