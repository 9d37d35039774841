"""anomaly: learn what normal parts look like, flag what the model cannot reconstruct."""

from anomaly.errors import AnomalyError

__version__ = "0.1.0"

__all__ = ["AnomalyError", "__version__"]
