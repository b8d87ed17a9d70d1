"""Training tasks of the model families beyond supervised (one module per family, each sets TASK)."""
