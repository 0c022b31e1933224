"""Where a sweep runs: clusters, schedulers and the shared servers a lab's sweeps report to."""
