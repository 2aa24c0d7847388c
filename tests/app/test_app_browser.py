"""End to end: `iclwb app` in a real headless Chromium (Debian's, via Playwright).

Starts the app on a free local port on a store with a superseded run (two runs of one circuit
cell), opens a page URL first (not ``/``: a new server once answered that with Streamlit's legacy
file-name navigation and without the ``--results`` folder), walks every page (stored and live
sources), picks a head in the explorer, clicks through from the head scan to the explorer, saves a
screenshot of each page to ``screenshots/`` and fails on any exception box or legacy navigation.
Needs /usr/bin/chromium (scripts/setup-browser.sh installs it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.test_app_logic import make_store
from tests.helpers import store_with_superseded

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    url = f"http://localhost:{port}/_stcore/health"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`iclwb app` exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer {url} within {timeout} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "store"
    store_with_superseded(root)  # circuit cell "m": a 128-prompt run and a later 32-prompt pilot
    store = make_store(root)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = (tmp_path_factory.mktemp("log") / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli.main", "app", "--results", str(store), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_healthy(port, proc)
        yield f"http://localhost:{port}", store
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group holds only this app and its streamlit
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the script run is over and nothing is still loading."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           timeout=timeout_ms)
    page.wait_for_timeout(600)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                           timeout=timeout_ms)


TITLES = ["Attention explorer", "Head scan", "Circuit", "ICL vs GD", "Results", "ICL vectors", "Training dynamics"]


def check_navigation(page) -> None:
    """The sidebar lists the app's pages by their titles (st.navigation), not Streamlit's legacy
    navigation of file names (``main``, ``1 explorer``, ...)."""
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.first.wait_for(timeout=60_000)
    links = nav.first.locator("a")
    entries = [links.nth(i).inner_text().strip().split("\n")[-1].strip() for i in range(links.count())]
    assert entries == TITLES, f"legacy or wrong navigation: {entries}"  # legacy: main, 1 explorer, ...


def check_page(page, name: str, min_charts: int = 0) -> None:
    settle(page)
    check_navigation(page)
    assert page.get_by_text("Page not found").count() == 0, f"{name}: 'Page not found'"
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{name}: exception box: {errors.first.inner_text()[:2000]}"
    charts = page.locator('[data-testid="stPlotlyChart"]')
    if min_charts:
        charts.nth(min_charts - 1).wait_for(timeout=60_000)
    assert charts.count() >= min_charts, f"{name}: {charts.count()} charts, expected >= {min_charts}"
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def go(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.wait_for_timeout(300)


def pick_source(page, label: str) -> None:
    page.locator('[data-testid="stRadio"]').get_by_text(label, exact=True).first.click()
    page.wait_for_timeout(300)
    settle(page)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("path", ["results", "circuit"])
def test_a_first_visit_to_a_page_url_gets_the_navigation_and_the_results_folder(app_url, path):
    """A new browser's first request is a page's URL: the page still gets the app's navigation and
    the --results folder (the Results page names its rows; the Circuit page shows the stored
    128-prompt run, not the superseded pilot)."""
    from playwright.sync_api import sync_playwright

    url, store = app_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"{url}/{path}", wait_until="domcontentloaded")
            page.locator('[data-testid="stSidebarNav"]').first.wait_for(timeout=120_000)
            if path == "results":
                page.get_by_text("Download CSV").wait_for(timeout=120_000)
                check_page(page, "0_first_visit_results", min_charts=1)
                body = page.locator('[data-testid="stMain"]').inner_text()
                assert f"from {store}" in body and "1 superseded run of the same cells left out" in body
                assert "no results folder given" not in body
            else:
                page.get_by_text("4 · Ablations beside their random controls").wait_for(timeout=120_000)
                check_page(page, "0_first_visit_circuit", min_charts=1)
                body = page.locator('[data-testid="stMain"]').inner_text()
                assert "× 128 prompts" in body and "1 superseded run of the same cells left out" in body
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_in_chromium(app_url):
    from playwright.sync_api import sync_playwright

    url, _ = app_url
    assert Path(CHROMIUM).exists(), "run scripts/setup-browser.sh (installs Debian's chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(f"{url}/training_dynamics", wait_until="domcontentloaded")  # a page URL first
            page.get_by_role("button", name="Run dynamics").wait_for(timeout=120_000)
            check_page(page, "0_first_visit_training_dynamics")
            go(page, "Attention explorer")
            page.get_by_text("Attention explorer").first.wait_for(timeout=120_000)
            check_page(page, "1_explorer", min_charts=3)
            # pick a head from the grid
            page.get_by_role("button", name="L1H2", exact=True).click()
            page.get_by_text("Head L1H2").wait_for(timeout=60_000)
            check_page(page, "1_explorer_L1H2", min_charts=3)

            go(page, "Head scan")
            page.get_by_text("Top heads").wait_for(timeout=120_000)
            check_page(page, "2_head_scan", min_charts=2)
            open_btn = page.get_by_role("button", name="in the explorer")
            head_id = open_btn.inner_text().split()[1]
            open_btn.click()
            page.get_by_text(f"Head {head_id}").wait_for(timeout=60_000)
            check_page(page, "2_head_scan_to_explorer", min_charts=3)

            go(page, "Circuit")  # the store's circuit cell first (Stored sweep is the default), then live
            page.get_by_text("4 · Ablations beside their random controls").wait_for(timeout=180_000)
            check_page(page, "3_circuit_stored", min_charts=1)
            pick_source(page, "Live run")
            page.get_by_text("4 · Ablations beside their random controls").wait_for(timeout=180_000)
            check_page(page, "3_circuit", min_charts=6)

            go(page, "ICL vs GD")
            page.get_by_role("heading", name="ICL vs GD").first.wait_for(timeout=60_000)
            settle(page)
            check_page(page, "4_icl_vs_gd_stored", min_charts=1)
            pick_source(page, "Live run")
            run = page.get_by_role("button", name="Run ICL vs GD")
            if run.count():  # language models fine-tune on request; linear-regression runs at once
                run.click()
            check_page(page, "4_icl_vs_gd", min_charts=3)

            go(page, "ICL vectors")
            page.get_by_text("Accuracy with and without the vector").first.wait_for(timeout=180_000)
            check_page(page, "6_icl_vectors", min_charts=1)

            go(page, "Training dynamics")
            page.get_by_role("heading", name="Training dynamics").first.wait_for(timeout=60_000)
            settle(page)
            page.get_by_role("button", name="Run dynamics").click()
            page.get_by_text("Head scores at one checkpoint").wait_for(timeout=240_000)
            check_page(page, "7_training_dynamics", min_charts=6)

            go(page, "Results")
            page.get_by_text("Download CSV").wait_for(timeout=60_000)
            check_page(page, "5_results", min_charts=1)
        finally:
            browser.close()
