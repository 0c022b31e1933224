"""Report keys of the inference measurement (no imports: the driver and the report read them)."""

INFER_MS_KEY = "infer_ms"  # median forward time of the exported sparse network (ms)
INFER_MS_DENSE_KEY = "infer_ms_dense"  # the same network run dense (same architecture, same input)
INFER_SPEEDUP_KEY = "infer_speedup"  # infer_ms_dense / infer_ms (>= 1 up to timing noise)
INFER_KEYS = (INFER_MS_KEY, INFER_MS_DENSE_KEY, INFER_SPEEDUP_KEY)
# Wall-clock measurements of a report: two identical runs (or a run and its resume) differ in them.
TIMING_KEYS = ("epoch_time_s", *INFER_KEYS)
