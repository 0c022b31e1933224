"""Every MLflow tag name the sweep writes or searches by, in one place (no imports: the report,
the UI views, the callback and the tests all read them from here)."""

from __future__ import annotations

# MLflow's own tags
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
RUN_COLOR_TAG = "mlflow.runColor"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: The UI's "Machine learning" kind: the experiment page opens on the runs table.
EXPERIMENT_KIND = "custom_model_development"
#: Experiment tags holding saved views of the runs table (MLflow's UI "Share" button).
VIEW_TAG_PREFIX = "mlflow.sharedViewState."

# sparsesweep's tags
KIND_TAG = "sparsesweep.kind"  # "sweep" (the parent run) or "trial"
SPACE_TAG = "sparsesweep.space"
SWEEP_NAME_TAG = "sparsesweep.sweep_name"
FAMILY_TAG = "sparsesweep.family"
METHOD_TAG = "sparsesweep.method"
#: The keys the sweep varies (comma-separated): the param columns worth showing.
SWEPT_TAG = "sparsesweep.swept"
#: A trial's named variant of its space (the space's own word for it), when it has one.
VARIANT_TAG = "sparsesweep.variant"
TRIAL_ID_TAG = "sparsesweep.trial_id"
TRIAL_NAME_TAG = "sparsesweep.trial_name"
TRIAL_PATH_TAG = "sparsesweep.trial_path"
NUM_FAILURES_TAG = "sparsesweep.num_failures"
#: How the trial ended: finished, diverged, error, stopped or killed (searchable in the UI).
STATUS_TAG = "sparsesweep.status"
#: One line: the exception that ended an errored trial (type and message).
ERROR_TAG = "sparsesweep.error"
DIVERGED_AT_TAG = "sparsesweep.diverged_at"
#: Where an early-stopping scheduler stopped the trial ("epoch 1", "cycle 2").
STOPPED_TAG = "sparsesweep.stopped_at"
#: The Optuna study a driver joined (`--study`): on each joining sweep's parent run.
STUDY_TAG = "sparsesweep.study"
