"""What the probe's outputs mean: the emotion hierarchy, recognition and bias statistics, plots."""
