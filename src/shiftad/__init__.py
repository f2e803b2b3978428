"""shiftad: industrial visual anomaly detection under domain shift."""

__version__ = "0.1.0"
