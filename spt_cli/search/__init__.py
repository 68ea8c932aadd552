"""SPT-DARTS: the architect (alpha step), the bi-level search loop and layer selection."""
