"""ResNet-18/34 targets (placeholder until written)."""
