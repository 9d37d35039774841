"""``python -m anomaly`` runs the ``anomaly`` command."""

import sys

from anomaly.cli import main

sys.exit(main())
