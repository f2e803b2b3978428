"""The data stage: every source becomes one manifest of ImageRecords."""
