"""The MLflow UI checked in a real browser after a tiny study: headless Chromium (Debian's
``chromium``) driven by Playwright, against ``mlflow server`` started as ``raylm ui`` starts it.

Every wait is for text or an image on the page, never for network idle (which fires while the
single-page app is still a skeleton). Screenshots are kept in ``test-artifacts/mlflow-ui/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "mlflow-ui"
# Flags for a headless browser on a machine with no outside network (no background connections,
# no sandbox when running as root in a container).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# A first visit opens MLflow's assistant panel over the page; a user who closed it once never sees it again.
CLOSED_ASSISTANT = ("window.localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                    "window.localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
TIMEOUT_MS = 90_000  # the UI renders slowly on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(CLOSED_ASSISTANT)
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        browser.close()


@pytest.fixture(scope="module")
def ui(tiny_study, tmp_path_factory):
    from raylm.tracking.ui_server import ServerProcess, start_ui

    _, _, outcome = tiny_study
    server = start_ui(outcome.tracking_uri,
                      process=ServerProcess(log_path=tmp_path_factory.mktemp("ui") / "mlflow-server.log"))
    yield server
    server.stop()


def served(link: str, ui) -> str:
    """A link the CLI printed (for the default UI address), opened on the test's server."""
    from raylm.tracking.links import DEFAULT_UI

    assert link.startswith(DEFAULT_UI + "/#/experiments/") and "workflowType=machine_learning" in link
    return ui.url + link[len(DEFAULT_UI):]


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path))
    return path


def point_names(outcome) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(outcome.tracking_uri)
    children = client.search_runs([outcome.experiment_id], f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    return sorted(child.info.run_name for child in children)


def test_the_experiment_shows_the_study_parent_with_its_nested_runs(tiny_study, ui, browser_page):
    from mlflow.tracking import MlflowClient

    from raylm.tracking.links import runs_link

    _, _, outcome = tiny_study
    parent_name = MlflowClient(outcome.tracking_uri).get_run(outcome.parent_run_id).info.run_name
    page = browser_page
    page.goto(served(runs_link(outcome.tracking_uri, outcome.experiment_id), ui))
    row = page.locator("[role=row]", has_text=parent_name).first
    row.wait_for()
    # Sorted by creation time, the UI folds nested runs under their parent: unfold them.
    row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    for name in point_names(outcome):
        page.get_by_text(name, exact=True).first.wait_for()
    assert shot(page, "00-study-parent-and-nested-runs.png").stat().st_size > 10_000


def test_the_printed_link_lists_the_study_s_nested_runs(tiny_study, ui, browser_page):
    from raylm.study.summary import outcome_summary

    _, _, outcome = tiny_study
    summary = outcome_summary(outcome)
    link = next(word for word in summary.split() if "searchFilter=" in word and "compareRunsMode" not in word)
    page = browser_page
    page.goto(served(link, ui))
    names = point_names(outcome)
    assert len(names) == 10  # 9 grid points and the verification run
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text(f"{len(names)} matching runs").wait_for()
    assert shot(page, "01-study-nested-runs.png").stat().st_size > 10_000


def test_the_chart_view_overlays_the_trials_loss_curves(tiny_study, ui, browser_page):
    from raylm.tracking.links import runs_link

    _, _, outcome = tiny_study
    page = browser_page
    page.goto(served(runs_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id, chart=True), ui))
    page.get_by_placeholder("Search metric charts").fill("loss")
    page.get_by_text("train/loss", exact=True).first.wait_for()
    page.get_by_text("val/loss", exact=True).first.wait_for()
    # The chart's legend names each plotted run as "<run name> (train/loss)": wait for several trials.
    page.wait_for_function("(document.body.innerText.match(/ \\(train\\/loss\\)/g) || []).length >= 2")
    legend = [name for name in point_names(outcome) if page.get_by_text(f"{name} (train/loss)").count()]
    assert len(legend) >= 2, f"the train/loss chart should overlay several trials, its legend names {legend}"
    assert shot(page, "02-overlaid-loss-curves.png").stat().st_size > 10_000


def test_the_parent_run_shows_the_prediction_and_its_plots(tiny_study, ui, browser_page):
    from raylm.tracking.links import run_link

    _, study, outcome = tiny_study
    page = browser_page
    parent = served(run_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id), ui)
    page.goto(parent)
    page.get_by_text("predicted/loss", exact=True).first.wait_for()
    page.get_by_text("verify/rel_error", exact=True).first.wait_for()
    shot(page, "03-study-parent-run.png")
    page.goto(parent.replace("?workflowType", "/artifacts?workflowType"))
    page.get_by_text("plots", exact=True).first.click()
    shown: list[str] = []  # the image sources seen so far: each plot must bring a new, loaded image
    for plot in ("frontier.png", "isoflops.png"):
        page.get_by_text(plot, exact=True).first.click()
        page.get_by_text(f"plots/{plot}").first.wait_for()
        handle = page.wait_for_function(
            "seen => Array.from(document.images).find(i => i.complete && i.naturalWidth > 300 && !seen.includes(i.src))"
            "?.src", arg=shown)
        shown.append(handle.json_value())
        assert shot(page, f"04-plot-{plot}").stat().st_size > 20_000


def test_the_parent_tells_the_story_and_the_verification_run_shows_its_data_and_model(tiny_study, ui, browser_page):
    from mlflow.tracking import MlflowClient

    from raylm.tracking.links import run_link

    _, _, outcome = tiny_study
    page = browser_page
    page.goto(served(run_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id), ui))
    page.get_by_text("Scaling study tiny").first.wait_for()  # the Description, rendered from Markdown
    page.get_by_text("Verification:").first.wait_for()
    shot(page, "05-study-description.png")
    verify = outcome.verify[0]
    run = MlflowClient(outcome.tracking_uri).get_run(verify.run_id)
    (shards,) = run.inputs.dataset_inputs
    page.goto(served(run_link(outcome.tracking_uri, outcome.experiment_id, verify.run_id), ui))
    page.get_by_text(shards.dataset.name).first.wait_for()  # the run's dataset: the token shards
    page.get_by_text(run.data.params["name"]).first.wait_for()
    page.get_by_text("Logged models").first.wait_for()
    assert shot(page, "06-verification-run-data-and-model.png").stat().st_size > 10_000
