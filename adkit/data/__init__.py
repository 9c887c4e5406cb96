"""Data for Anomaly-OV (DESIGN §5): synthesis, normal images, loaders, instruction pipeline."""

from .records import AnomalySample, DataError

__all__ = ["AnomalySample", "DataError"]
