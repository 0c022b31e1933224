"""The report: the papers' figures regenerated from what sweeps logged to MLflow."""
