"""The sweep's saved view of MLflow's runs table (MLflow 3.17.2's UI state format), and where
it opens.

MLflow's UI keeps a shared view in the experiment tag ``mlflow.sharedViewState.KEY``: JSON
(read as is when it is not compressed) holding the search facets (`searchFilter`,
`orderByKey`, `orderByAsc`) and the UI state the "Share" button saves. The UI state keys
3.17.2 restores (its bundle, `main.*.js`) are selectedColumns, columnOrder, columnWidths,
compareRunCharts, compareRunSections, viewMaximized, runListHidden, isAccordionReordered,
groupBy, groupsExpanded, useGroupedValuesInCharts, hideEmptyCharts, globalLineChartConfig and
chartsSearchFilter. Columns are named ``attributes.`Run Name```, ``tags.`K```,
``params.`K``` and ``metrics.`K```; `columnOrder` lists them in order, `columnWidths` gives
pixels. A chart card is the bundle's `RunsChartsCardConfig`: a SCATTER card has ``xaxis`` /
``yaxis`` ({key, type: "METRIC"}); a LINE card ``metricKey``, ``selectedMetricKeys`` and
``xAxisKey`` ("step"); each names its section (`metricSectionId`, a `compareRunSections`
uuid). The UI adds its own generated charts for the other metrics in later sections. 3.17.2
titles a card by its axes ("density vs. test_acc"), not by its `displayName`.

The table has no number format in its state: values show as logged (rounding them at logging
would change the data), so the metric columns are narrow and the first ones are what a
comparison reads: method, test accuracy, density, dying ratio.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from orchestrator.tracking.tags import KIND_TAG, METHOD_TAG, SWEEP_NAME_TAG, VIEW_TAG_PREFIX
from trainables.keys import CYCLE_REINIT_TEST_ACC, CYCLE_TEST_ACC

#: Metric columns right after the method, in this order (absent ones stay empty).
FIRST_METRICS = ("test_acc", "density", "dying_ratio")
#: Then the sweep's own metric when it is another one, the swept params, and these.
LATER_METRICS = ("train_acc", "test_loss")
RUN_NAME_COLUMN = "attributes.`Run Name`"
METHOD_COLUMN = f"tags.`{METHOD_TAG}`"
SECTION_ID = "sparsesweep-comparison"
SCATTER_ID = "sparsesweep-acc-vs-density"
CYCLES_ID = "sparsesweep-cycle-acc"
#: The UI's "Model training" side of its GenAI / Model training switch (URL parameter).
WORKFLOW_QUERY = "workflowType=machine_learning"
CHART_MODE_QUERY = "compareRunsMode=CHART"


def view_key(sweep_name: str) -> str:
    """The share key of a sweep's saved view (letters, digits, - and _)."""
    return "sweep-" + re.sub(r"[^A-Za-z0-9_-]", "_", sweep_name)[:80]


def metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def view_state(sweep_name: str, metric: str, mode: str, swept_params: Sequence[str],
               extra_metrics: Sequence[str] = ()) -> dict:
    """The saved view: this sweep's trials sorted by its metric; method, test accuracy,
    density and dying ratio first, then the swept params; a scatter of test accuracy
    against density (dense runs log density 1.0, so they are on it) and per-cycle test
    accuracy with IMP's reinit baseline."""
    metrics = list(dict.fromkeys([*FIRST_METRICS, metric, *extra_metrics, *LATER_METRICS]))
    params = [f"params.`{k}`" for k in swept_params]
    columns = [METHOD_COLUMN, *(metric_column(m) for m in metrics[:len(FIRST_METRICS)]), *params,
               *(metric_column(m) for m in metrics[len(FIRST_METRICS):])]
    widths = {RUN_NAME_COLUMN: 260, METHOD_COLUMN: 170,  # its header, sparsesweep.method, in full
              **{c: 120 for c in columns if c.startswith("metrics.")},
              **{c: 130 for c in params}}
    name = sweep_name.replace("'", "")
    # trials only: with their parent in the result the UI nests them under it, collapsed
    # (a shared view cannot expand rows), and the first screen would be one row
    where = f"tags.`{SWEEP_NAME_TAG}` = '{name}' and tags.`{KIND_TAG}` = 'trial'"
    charts = [
        {"uuid": SCATTER_ID, "type": "SCATTER", "metricSectionId": SECTION_ID, "deleted": False,
         "isGenerated": False, "displayName": "test accuracy against density",
         "xaxis": {"key": "density", "type": "METRIC"}, "yaxis": {"key": "test_acc", "type": "METRIC"},
         "runsCountToCompare": 100},
        {"uuid": CYCLES_ID, "type": "LINE", "metricSectionId": SECTION_ID, "deleted": False,
         "isGenerated": False, "displayName": "test accuracy per cycle / round (reinit baseline)",
         "metricKey": CYCLE_TEST_ACC, "selectedMetricKeys": [CYCLE_TEST_ACC, CYCLE_REINIT_TEST_ACC],
         "xAxisKey": "step", "selectedXAxisMetricKey": "", "xAxisScaleType": "linear",
         "scaleType": "linear", "lineSmoothness": 0, "displayPoints": True, "yAxisKey": "metric",
         "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": False,
         "useGlobalLineSmoothing": False, "runsCountToCompare": 100,
         "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None}},
    ]
    sections = [{"uuid": SECTION_ID, "name": "sparsesweep: comparison", "display": True,
                 "isReordered": False, "deleted": False, "isGenerated": False}]
    return {"searchFilter": where, "orderByKey": metric_column(metric), "orderByAsc": mode == "min",
            "selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN, *columns],
            "columnWidths": widths, "compareRunCharts": charts, "compareRunSections": sections,
            "isAccordionReordered": True, "hideEmptyCharts": True}


def view_tag(key: str, state: dict) -> tuple[str, str]:
    """(experiment tag, value) of a saved view."""
    return VIEW_TAG_PREFIX + key, json.dumps(state, separators=(",", ":"))


def view_path(experiment_id: str, key: str, charts: bool = False) -> str:
    """The UI route of a saved view: the runs page itself in "Model training" mode (on
    ``#/experiments/ID?…`` the UI redirects to ``/runs`` and drops the view's key; without the
    mode a fresh browser gets the GenAI overview)."""
    query = f"viewStateShareKey={key}&{WORKFLOW_QUERY}" + (f"&{CHART_MODE_QUERY}" if charts else "")
    return f"#/experiments/{experiment_id}/runs?{query}"


def view_url(tracking_uri: str, experiment_id: str, key: str, *, base: str = "", charts: bool = False) -> str:
    """Where the saved view opens: on the tracking server, on `base` (a UI's real address), or,
    for a local store without a running UI, the route alone: relative, so the link in the
    parent's description works on whatever port `make ui` serves."""
    if not base and tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri
    path = view_path(experiment_id, key, charts)
    return f"{base.rstrip('/')}/{path}" if base else path
