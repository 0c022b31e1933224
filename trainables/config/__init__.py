"""Typed experiment config: schema, dataset and model catalog, method configs and cards, and
`ExperimentConfig`, re-exported here so `from trainables.config import ...` reads one place.

- `schema`: `param` fields, typing of CLI strings, range and choice constraints.
- `catalog`: the dataset table (`DATASETS`) and the model table (`MODELS`).
- `groups`: the fixed groups (data, model, optim, schedule, run).
- `methods`: the per-method config groups.
- `cards`: one card per method (name, config, Method class, family, label, short keys).
- `experiment`: the other groups, `ExperimentConfig`, the trial-config reader, `--help-config`.
"""

from trainables.config.cards import (
    METHOD_CARDS,
    METHODS,
    MethodCard,
    family_of,
    label_of,
    method_short_keys,
    register_method,
)
from trainables.config.catalog import (
    DATASETS,
    MODEL_MIN_SIDE,
    MODELS,
    DatasetSpec,
    ModelSpec,
    model_input_error,
)
from trainables.config.experiment import (
    VARIANT_KEY,
    ExperimentConfig,
    describe_keys,
    resolve_tune_config,
)
from trainables.config.groups import (
    OPTIMIZERS,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
)
from trainables.config.methods import (
    DST_CRITERIA,
    IMP_PHASES,
    SCORE_INITS,
    SUPERMASK_WEIGHT_INITS,
    WEIGHT_INITS,
    CyclesConfig,
    DenseConfig,
    DenseLRRConfig,
    DSTConfig,
    EdgePopupConfig,
    ImpConfig,
    IterativeEdgePopupConfig,
    MethodConfig,
    SupermaskConfig,
)
from trainables.config.schema import ConfigError, param

__all__ = [
    "DATASETS", "DST_CRITERIA", "IMP_PHASES", "METHODS", "METHOD_CARDS", "MODELS", "MODEL_MIN_SIDE", "OPTIMIZERS",
    "SCHEDULES", "SCORE_INITS", "SUPERMASK_WEIGHT_INITS", "VARIANT_KEY", "WEIGHT_INITS", "ConfigError",
    "CyclesConfig", "DSTConfig", "DataConfig", "DatasetSpec", "DenseConfig", "DenseLRRConfig", "EdgePopupConfig",
    "ExperimentConfig", "ImpConfig", "IterativeEdgePopupConfig", "MethodCard", "MethodConfig", "ModelConfig",
    "ModelSpec", "OptimConfig", "RunConfig", "ScheduleConfig", "SupermaskConfig", "describe_keys", "family_of",
    "label_of", "method_short_keys", "model_input_error", "param", "register_method", "resolve_tune_config",
]
