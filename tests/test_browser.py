"""What a sweep leaves behind, seen in a real headless Chromium: its report's index.html (every
image loaded, on disk and inside MLflow's artifact view) and MLflow 3.17's UI served by a real
`mlflow server` on 127.0.0.1 (the saved view through the link the sweep prints: its first
columns and its charts, the dense run on the accuracy-against-density scatter; a trial's run
page with its description, its artifact view with the mask figure, the parent's description,
the compare view of the trials), with screenshots.

One tiny sweep (the tour's dense and EP variants) against one server serves the whole module. The browser is the system
Chromium driven by Playwright's Python package (no `playwright install`, no download). Without a
Chromium binary the module is skipped, except with SPARSESWEEP_REQUIRE_BROWSER=1 (CI), where
that fails. Screenshots go to pytest's tmp dir; SPARSESWEEP_UI_SHOTS=DIR copies them to DIR
(`SPARSESWEEP_UI_SHOTS=docs/ui python -m pytest tests/test_browser.py` refreshes the README's).

MLflow's UI is a React app: every check waits for what it looks for (no fixed sleeps).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from conftest import MlflowServer
from orchestrator.tracking.callback import iter_child_runs
from orchestrator.tracking.tags import KIND_TAG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("SPARSESWEEP_REQUIRE_BROWSER") == "1"
#: Candidates for the browser binary: Debian's `chromium` first; SPARSESWEEP_CHROMIUM overrides.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EXPERIMENT = "browser"
SWEEP = "br"
CHILDREN = ["dense/dense/seed=0", "ep/ep/seed=0"]
WAIT_MS = 60_000  # a cold page on 2 busy cores; each wait ends as soon as its element is there
#: The MLflow UI's screenshots (report.png, of index.html, stays in tmp).
UI_SHOTS = ("runs_table.png", "saved_view_charts.png", "run_page.png", "artifact_view.png", "report_in_mlflow.png",
            "compare.png")
WIDE = {"width": 2200, "height": 560}  # the table's columns are virtualised: off-screen ones aren't in the DOM


def find_chromium() -> str | None:
    if path := os.environ.get("SPARSESWEEP_CHROMIUM"):
        return path if Path(path).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _skip_or_fail(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (SPARSESWEEP_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = find_chromium()
    if chromium is None:
        _skip_or_fail(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)} on PATH, or SPARSESWEEP_CHROMIUM); "
                      "Debian: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("Python package playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Swept:
    uri: str
    experiment_id: str
    storage: Path
    stdout: str
    parent: Any
    children: list[Any]  # sorted by run name


@pytest.fixture(scope="module")
def swept(browser: Any, mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Swept:
    """`python -m orchestrator.sweep` of 2 tiny trials against the server, as a user runs it
    (after `browser`: without one the module skips before it sweeps)."""
    uri = mlflow_server.wait_healthy()
    storage = tmp_path_factory.mktemp("browser-sweep") / "runs"
    args = ["--storage", str(storage), "--tracking-uri", uri, "--experiment", EXPERIMENT, "--name", SWEEP,
            "--space", "tour", "--variants", "dense,ep", "--max-concurrent", "2",
            "--set", "run.max_steps_per_epoch=3"]
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = 'sweep'")
    children = sorted(iter_child_runs(client, exp.experiment_id, parent.info.run_id), key=lambda r: r.info.run_name)
    assert [c.info.run_name for c in children] == CHILDREN
    return Swept(uri, exp.experiment_id, storage, proc.stdout, parent, children)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("screenshots")
    yield out
    if dest := os.environ.get("SPARSESWEEP_UI_SHOTS"):
        Path(dest).mkdir(parents=True, exist_ok=True)
        for name in UI_SHOTS:
            if (out / name).is_file():
                shutil.copyfile(out / name, Path(dest) / name)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    try:
        yield pg
    finally:
        context.close()


def images(pg: Any, selector: str = "img") -> list[dict[str, Any]]:
    """Each matching <img>: its src, and whether the browser decoded it (complete, width > 0)."""
    return pg.eval_on_selector_all(selector, "els => els.map(i => ({src: i.getAttribute('src'), "
                                             "loaded: i.complete && i.naturalWidth > 0}))")


def close_assistant(pg: Any) -> None:
    """The UI opens its "MLflow Assistant" side panel on a first visit; it hides a third of the page."""
    close = pg.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.click()
        close.wait_for(state="detached")


def ui(s: Swept, route: str) -> str:
    """A UI address in its "Model training" mode (the GenAI mode has no runs table)."""
    return f"{s.uri}/#/{route}{'&' if '?' in route else '?'}workflowType=machine_learning"


def test_report_index_shows_every_figure(swept: Swept, shots: Path, page: Any) -> None:
    """The report the sweep wrote from the runs on the server: each listed figure has its image,
    and the browser decoded every one."""
    index = swept.storage / "tune" / SWEEP / "report" / "index.html"
    assert f"Report: {index}" in swept.stdout
    page.goto(index.as_uri(), wait_until="load")  # "load" waits for every <img>
    n = int(re.search(r"(\d+) figure\(s\)", page.inner_text("body")).group(1))
    sections = page.eval_on_selector_all("section", "els => els.map(e => e.querySelectorAll('img').length)")
    assert n >= 2 and sections == [1] * n  # one image per figure listed
    imgs = images(page)
    assert len(imgs) == n and all(i["loaded"] for i in imgs), [i["src"][:80] for i in imgs if not i["loaded"]]
    assert all(i["src"].startswith("data:image/png;base64,") for i in imgs)  # self-contained
    files = page.eval_on_selector_all("img", "els => els.map(i => i.dataset.file)")
    assert set(files) == {p.name for p in index.parent.glob("*.png")}  # and the files beside it
    page.screenshot(path=shots / "report.png", animations="disabled")


def test_report_inside_mlflow_shows_every_image(swept: Swept, shots: Path, page: Any) -> None:
    """The parent's report/index.html opened in MLflow's artifact view (shown from a blob URL, where
    a relative src resolves to nothing): every image decodes."""
    page.set_viewport_size({"width": 1600, "height": 1100})
    page.goto(ui(swept, f"experiments/{swept.experiment_id}/runs/{swept.parent.info.run_id}"
                        "/artifacts/report/index.html"))
    close_assistant(page)
    # MLflow's HTML view: an iframe (sandbox="allow-scripts": another origin) on a blob: URL
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    frame.locator("section img").first.wait_for()
    imgs = frame.locator("section img")
    imgs.last.evaluate("i => i.decode()")  # waits until the browser decoded it (throws if it cannot)
    loaded = imgs.evaluate_all("els => els.map(i => ({src: i.getAttribute('src'), "
                               "loaded: i.complete && i.naturalWidth > 0}))")
    n = int(re.search(r"(\d+) figure\(s\)", frame.locator("body").inner_text()).group(1))
    assert len(loaded) == n >= 2 and all(i["loaded"] for i in loaded), \
        [i["src"][:60] for i in loaded if not i["loaded"]]
    first = frame.locator("section").evaluate_all("els => els.map(e => e.id)")[:2]
    assert first[0] == "cross_families" and first[1].startswith("sweep_")  # what the tour is for, first
    close_assistant(page)  # it may open only once the page has settled
    page.screenshot(path=shots / "report_in_mlflow.png", animations="disabled")


def _header_order(pg: Any) -> list[str]:
    """The table's column ids in the order they are shown (aria-colindex; the DOM order is not)."""
    return pg.eval_on_selector_all(
        ".ag-header-row-column .ag-header-cell[col-id]",
        "els => els.map(e => [Number(e.getAttribute('aria-colindex')), e.getAttribute('col-id')])"
        ".sort((a, b) => a[0] - b[0]).map(x => x[1])")


def test_saved_view_from_the_printed_link(swept: Swept, shots: Path, page: Any) -> None:
    """The link the sweep prints opens the runs table (not the GenAI overview) on the saved view:
    the trials by name, their method, test accuracy and density the first columns, then the
    dying ratio; Dataset and Source out of the way."""
    link = re.search(r"This sweep in MLflow's runs table: (\S+)", swept.stdout).group(1)
    page.set_viewport_size(WIDE)
    page.goto(link)
    for name in CHILDREN:
        page.get_by_text(name, exact=True).wait_for()
    close_assistant(page)
    assert "/runs?" in page.url and "searchFilter=tags." in page.url  # the view applied, not the overview
    page.locator('.ag-header-cell[col-id="tags.`sparsesweep.method`"]').wait_for()
    cols = [c for c in _header_order(page) if "`" in c and c != "attributes.`Run Name`"]  # not the checkbox
    assert cols[:4] == ["tags.`sparsesweep.method`", "metrics.`test_acc`", "metrics.`density`",
                        "metrics.`dying_ratio`"], cols
    assert "attributes.`Dataset`" not in cols[:6] and "attributes.`Source`" not in cols[:6]
    rows = page.locator(".ag-center-cols-container .ag-row").all_inner_texts()
    assert len(rows) == 2, rows  # the trials only: the parent is not in the view
    cells = [r.split("\n") for r in rows]  # DOM order, not the columns' (aria-colindex says that)
    assert sorted(c for row in cells for c in row if c in ("dense", "ep")) == ["dense", "ep"], rows
    dense = next(row for row in cells if "dense" in row)
    assert "1" in dense, dense  # dense runs log density 1.0
    page.screenshot(path=shots / "runs_table.png", animations="disabled")


def test_saved_view_charts_accuracy_against_density(swept: Swept, shots: Path, page: Any) -> None:
    """The saved view's charts: test accuracy against density (the dense run at density 1.0 on
    it, beside EP), and per-cycle accuracy with the reinit baseline."""
    link = re.search(r"This sweep in MLflow's runs table: (\S+)", swept.stdout).group(1)
    page.set_viewport_size({"width": 1700, "height": 1100})
    page.goto(link + "&compareRunsMode=CHART")
    close_assistant(page)
    page.get_by_text("sparsesweep: comparison").first.wait_for()  # the saved charts' section, first
    page.get_by_text("density vs. test_acc", exact=True).first.wait_for()  # 3.17.2 titles them by axes
    page.get_by_text(re.compile(r"^cycle/test_acc vs cycle/reinit_test_acc")).first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.data && "
                           "p.data.some(t => t.mode && t.mode.includes('markers') && (t.x || []).length >= 2))")
    xs = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => (p.data || [])"
                       ".filter(t => t.mode && t.mode.includes('markers')).flatMap(t => [...(t.x || [])]))")
    densities = {round(float(x), 3) for x in xs if isinstance(x, int | float)}
    assert 1.0 in densities and 0.328 in densities, xs  # dense (density 1.0) and EP (k = 0.672)
    page.screenshot(path=shots / "saved_view_charts.png", animations="disabled")


def test_run_page_and_its_mask_figure(swept: Swept, shots: Path, page: Any) -> None:
    """A trial's page: name, parent, source, dataset, tags; its artifact view shows
    masks/density.png, decoded."""
    child = swept.children[1]  # EP: a mask
    page.goto(ui(swept, f"experiments/{swept.experiment_id}/runs/{child.info.run_id}"))
    page.get_by_role("heading", name=CHILDREN[1]).wait_for()
    close_assistant(page)
    page.get_by_role("link", name=swept.parent.info.run_name).wait_for()  # "Parent run"
    for text in ("python -m orchestrator.sweep", "digits (", "sparsesweep.family", "strong_lottery"):
        page.get_by_text(text).first.wait_for()
    # its one-line description: method, density, final accuracy
    page.get_by_text(re.compile(r"^ep, density 0\.328, final test accuracy 0\.\d{4}$")).first.wait_for()
    page.screenshot(path=shots / "run_page.png", animations="disabled")

    page.goto(ui(swept, f"experiments/{swept.experiment_id}/runs/{child.info.run_id}/artifacts/masks/density.png"))
    figure = 'img[alt="masks/density.png"]'
    page.wait_for_function(f"() => {{ const i = document.querySelector('{figure}');"
                           " return i !== null && i.complete && i.naturalWidth > 0; }")
    assert images(page, figure)[0]["loaded"]
    width, height = page.eval_on_selector(figure, "i => [i.naturalWidth, i.naturalHeight]")
    assert width >= 1000 and height >= 600, (width, height)  # readable: 150 dpi, >= 4 inches tall
    # the mask file it summarises, beside it; the tree opens with a JS (velocity) animation
    page.locator('[data-testid="artifact-tree-node"][artifact-name="masks.parquet"]').wait_for()
    page.wait_for_function("() => !document.querySelector('.velocity-animating')")
    page.screenshot(path=shots / "artifact_view.png", animations="disabled")


def test_parent_description_links_to_the_sweep(swept: Swept, page: Any) -> None:
    """The parent's description holds the command line and the saved view's link, which opens."""
    page.goto(ui(swept, f"experiments/{swept.experiment_id}/runs/{swept.parent.info.run_id}"))
    page.get_by_text("Started with:").wait_for()
    page.get_by_text(f"python -m orchestrator.sweep --storage {swept.storage}").wait_for()
    link = page.get_by_role("link", name=re.compile("This sweep's runs"))
    href = link.get_attribute("href")
    assert href is not None and "workflowType=machine_learning" in href
    page.goto(href)
    for name in CHILDREN:
        page.get_by_text(name, exact=True).wait_for()
    assert "/runs?" in page.url and "searchFilter=tags." in page.url  # the saved view, as in the table test


def test_compare_view_of_the_trials(swept: Swept, shots: Path, page: Any) -> None:
    """The compare view names the runs; "Show diff only" leaves the one swept param."""
    ids = json.dumps([c.info.run_id for c in swept.children])
    page.set_viewport_size({"width": 1600, "height": 1250})
    page.goto(ui(swept, f"compare-runs?runs={ids}&experiments={json.dumps([swept.experiment_id])}"))
    page.get_by_text("Comparing 2 Runs").wait_for()
    close_assistant(page)
    for name in CHILDREN:
        page.get_by_text(name, exact=True).first.wait_for()
    diff = page.get_by_role("switch", name="Parameters - Show diff only")
    diff.click()
    # the params table without its identical rows (the dataset is the same in both)
    params = page.locator("table.mlflow-compare-table").filter(has_text="method.name").filter(
        has_not_text="sparsesweep.")  # not the tags table
    params.filter(has_not_text="data.dataset").wait_for()
    assert diff.get_attribute("aria-checked") == "true"
    text = params.inner_text().split()
    assert text[text.index("method.name"):][:3] == ["method.name", "dense", "edge_popup"], text
    page.screenshot(path=shots / "compare.png", animations="disabled")
