"""MLflow: tag names and run labels, the logging operations and their writer, the outage
spool, the Tune callback, replay (sync) and the SQLite store. Only the driver side imports it."""
