"""paywatch: observability and anomaly monitoring for payment systems."""

__version__ = "0.1.0"
