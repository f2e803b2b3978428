"""The evaluate stage: thresholds from validation, metrics on test."""
