"""A real browser on Evidently's UI: `riskops ui` as a subprocess, headless Chromium driven by Selenium.

- `running_ui(workspace, log_dir)`: `python -m cli.main ui --workspace DIR` on a free port, ready
  (``/api/projects`` answers) when entered, stopped on exit; yields the base URL.
- `chromium(profile_dir)`: headless Chromium through the OS's chromedriver (`Service` with its path,
  so Selenium Manager never looks for a driver on the network), flags that keep it off the network.
- `read_dashboard(driver, url, titles)`: open a project's dashboard, wait until every chart panel has
  drawn, and return what each panel shows (line marks, bars, counter values).
- `read_report_list(driver, url)`: the Reports page's run count and each shown run's tags.
- `save_screenshot(driver, path)`: the whole page (not just the 1400x900 viewport) as PNG, also
  copied to $RISKOPS_TEST_ARTIFACTS when set.
- `open_drift_history(workspace, out_dir)`: all of the above for the monitor's project: its dashboard
  read and screenshotted (``out_dir/screenshot.png``), its Reports page read.

Evidently's UI draws its charts with MUI X Charts (SVG): a line's points are
``circle.MuiMarkElement-root`` (classed ``MuiMarkElement-series-<id>`` by series), a legend's names
``.MuiChartsLegend-label``, a bar is ``.MuiBarElement-root``, a counter's value an ``h2``; each
panel is a ``MuiCard`` whose ``h5`` is the panel's title. These selectors are what the rendered page
of evidently 0.7.23 exposes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.servers import free_port, stop, subprocess_env

ROOT = Path(__file__).resolve().parents[2]
WINDOW = (1400, 900)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextlib.contextmanager
def running_ui(workspace: Path, log_dir: Path, *args: str, timeout: float = 90.0) -> Iterator[str]:
    """`riskops ui --workspace workspace [args]` on a free port; yields its URL once /api/projects answers."""
    port = free_port()
    log = log_dir / f"ui-{port}.log"
    cmd = [sys.executable, "-m", "cli.main", "ui", "--workspace", str(workspace), "--port", str(port), *args]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"riskops ui exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/api/projects", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"riskops ui not ready after {timeout}s:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator[object]:
    """Headless Chromium (a fresh profile in `profile_dir`, window 1400x900) via the OS's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise RuntimeError("chromedriver is not on the PATH: install chromium and chromium-driver (make up)")
    options = webdriver.ChromeOptions()
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class PanelView:
    """What one dashboard panel shows."""

    title: str
    marks: int = 0  # points of its line series
    series_marks: list[int] = field(default_factory=list)  # points per line series, in drawing order
    legends: list[str] = field(default_factory=list)  # the series' names in its legend
    bars: int = 0
    counters: list[str] = field(default_factory=list)  # a counter panel's values as displayed
    text: str = ""

    @property
    def drawn(self) -> int:
        return self.marks + self.bars + len(self.counters)


# read in one script, so React re-rendering a panel mid-read cannot hand back stale elements
_READ_PANELS = """
return Array.from(document.querySelectorAll('div.MuiCard-root')).flatMap(card => {
  const h5 = card.querySelector('h5');
  if (!h5) return [];
  return [{title: h5.innerText.trim(),
           marks: card.querySelectorAll('circle.MuiMarkElement-root').length,
           series_marks: Object.values(Array.from(card.querySelectorAll('circle.MuiMarkElement-root'))
             .map(e => Array.from(e.classList).find(c => c.startsWith('MuiMarkElement-series-')))
             .reduce((n, s) => { n[s] = (n[s] || 0) + 1; return n; }, {})),
           legends: Array.from(card.querySelectorAll('.MuiChartsLegend-label')).map(e => e.innerText.trim()),
           bars: card.querySelectorAll('.MuiBarElement-root').length,
           counters: Array.from(card.querySelectorAll('h2')).map(e => e.innerText.trim()),
           text: card.innerText}];
});
"""


def _panels(driver) -> dict[str, PanelView]:
    return {p["title"]: PanelView(**p) for p in driver.execute_script(_READ_PANELS)}


def read_dashboard(
    driver,
    url: str,
    titles: list[str],
    charts: list[str],
    until: Callable[[dict[str, PanelView]], bool] | None = None,
    timeout: float = 60.0,
) -> dict[str, PanelView]:
    """Open `url` (a project's dashboard), wait until every title in `titles` is shown and every panel
    in `charts` has drawn something, the same counts twice in a row, and `until(panels)` holds (the
    page is reloaded meanwhile: new runs appear on a load); return the panels by title.

    A panel that never draws (a metric id or label the runs do not hold) ends the wait at `timeout`
    and is returned empty, for the test to name."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    last: dict[str, PanelView] = {}
    while True:
        panels = _panels(driver)
        ready = all(t in panels for t in titles) and all(panels[c].drawn for c in charts if c in panels)
        counts = {t: (p.marks, p.bars, tuple(p.counters)) for t, p in panels.items()}
        stable = ready and counts == {t: (p.marks, p.bars, tuple(p.counters)) for t, p in last.items()}
        if (stable and (until is None or until(panels))) or time.monotonic() > deadline:
            return panels
        if stable:  # drawn, but not yet what the caller waits for: load the page again
            driver.get(url)
            panels = {}
        last = panels
        time.sleep(0.5)


def read_report_list(driver, url: str, timeout: float = 30.0) -> tuple[int, list[list[str]]]:
    """Open `url` (a project's Reports page): the total number of runs its pager states ("1–10 of N")
    and the tags of each run on the first page (newest first), as the page shows them."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout
    while True:
        body = driver.find_element(By.TAG_NAME, "body").text
        m = re.search(r"\d+\s*[–-]\s*\d+\s+of\s+(\d+)", body)
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        if m and rows:
            tags = [
                [c.text.strip() for c in r.find_elements(By.CSS_SELECTOR, ".MuiChip-label")] for r in rows
            ]
            return int(m.group(1)), tags
        if time.monotonic() > deadline:
            raise AssertionError(f"the Reports page at {url} shows no runs:\n{body[:2000]}")
        time.sleep(0.5)


def save_screenshot(driver, path: Path) -> Path:
    """The whole page as a PNG at `path` (and under $RISKOPS_TEST_ARTIFACTS when set)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WINDOW[0], "height": max(height, WINDOW[1]), "scale": 1},
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    artifacts = os.environ.get("RISKOPS_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(artifacts) / path.name)
    return path


@dataclass
class DriftHistoryView:
    """What the browser showed of the monitor's project."""

    url: str  # the project's dashboard
    panels: dict[str, PanelView]
    runs_total: int  # the Reports page's count
    run_tags: list[list[str]]  # tags shown per run on its first page, newest first
    screenshot: Path


def open_drift_history(
    workspace: Path,
    out_dir: Path,
    project: str,
    titles: list[str],
    charts: list[str],
    name: str = "screenshot.png",
) -> DriftHistoryView:
    """Serve `workspace` with `riskops ui`, open project `project`'s dashboard in headless Chromium,
    wait for the panels (`read_dashboard`), save a full-page screenshot as `out_dir/name`, then read
    the project's Reports page."""
    with running_ui(workspace, out_dir) as url:
        found = [p for p in httpx.get(url + "/api/projects", timeout=10).json() if p["name"] == project]
        assert len(found) == 1, f"expected one project {project!r} in {workspace}, the UI lists {found}"
        dashboard = f"{url}/projects/{found[0]['id']}"
        with chromium(out_dir / "chromium-profile") as driver:
            panels = read_dashboard(driver, dashboard, titles, charts)
            shot = save_screenshot(driver, out_dir / name)
            total, tags = read_report_list(driver, dashboard + "/reports")
    return DriftHistoryView(dashboard, panels, total, tags, shot)
