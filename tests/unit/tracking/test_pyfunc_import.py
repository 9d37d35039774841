"""Importing the pyfunc wrapper leaves training and scoring logs free of MLflow's hint."""

import subprocess
import sys

# In a fresh interpreter: MLflow warns when the class is created, i.e. at first import.
PROBE = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import anomaly.tracking.model
    assert anomaly.tracking.model.AnomalyPyfunc.__module__ == "anomaly.tracking.model"
print("\\n".join(str(w.message) for w in caught))
"""


def test_importing_the_pyfunc_model_warns_nothing_about_type_hints():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert "type hints" not in done.stdout + done.stderr
