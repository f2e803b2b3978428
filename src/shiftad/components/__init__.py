"""Parts that several detectors share: aggregation, coreset, kNN, maps."""
