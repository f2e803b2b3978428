"""Statistics for evaluation results: bootstrap intervals, paired comparisons, DeLong tests, Holm correction."""
