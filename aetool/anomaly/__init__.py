"""Anomaly detection: scores, thresholds, labels, evaluation, heatmaps and the scoring pipeline."""
