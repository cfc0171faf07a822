"""Multiple-instance learning on slide bags: ABMIL (gated attention), cross-validation, metrics, heatmaps."""
