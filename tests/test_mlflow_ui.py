"""What a user sees in the MLflow UI, in a real browser: Debian's headless Chromium, driven over the
Chrome DevTools Protocol, on a real `mlflow server` over the store a real `--multirun` wrote."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import all_runs, free_port, mlflow_server_on

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]  # one Chromium at a time
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GENAI_OVERVIEW = "Token Usage"  # text of MLflow 3's GenAI experiment overview, absent from the runs table


class Browser:
    """One headless Chromium tab, spoken to over CDP (websocket-client)."""

    def __init__(self, profile: Path) -> None:
        import websocket

        assert CHROMIUM is not None
        port = free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
             "--window-size=1600,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.3)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120)
        self.calls = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.calls:
                assert "error" not in message, message["error"]
                return dict(message.get("result", {}))

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text_once(self, ready: Callable[[str], bool], timeout: float = 120) -> str:
        """The page's visible text once `ready` holds for it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.js("document.body ? document.body.innerText : ''") or ""
            if ready(text):
                return str(text)
            assert time.monotonic() < deadline, f"the page never got ready; it shows:\n{text[:2000]}"
            time.sleep(0.5)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def show_columns(browser: Browser, link: str, columns: list[str], sort_by: str) -> str:
    """Open the runs table at `link` with these columns shown (what a user picks under Columns:
    MLflow keeps the choice in the browser's localStorage), sorted by `sort_by` ascending, every
    sweep expanded; the table's text once the first column's header shows."""
    browser.open(link)
    browser.text_once(lambda t: "Run Name" in t)
    key = browser.js("Object.keys(localStorage).find(k => k.includes('ExperimentPage'))")
    state = json.loads(browser.js(f"localStorage.getItem({json.dumps(key)})"))
    parents = browser.js("[...document.querySelectorAll('[row-id]')].map(e => e.getAttribute('row-id'))")
    state |= {"selectedColumns": columns, "columnWidths": {c: 150 for c in columns},
              "runsExpanded": {run: True for run in parents or []}}  # fmt: skip
    browser.js(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))})")
    browser.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")  # the table, full width
    browser.open("about:blank")
    browser.open(f"{link}&orderByKey={quote(sort_by)}&orderByAsc=true")  # the sort lives in the URL
    header = columns[0].split("`")[1]
    return browser.text_once(lambda t: "Run Name" in t and header in t)


def table_cells(browser: Browser, column: str) -> dict[str, str]:
    """The runs table's cells of one column (e.g. RATIO), by run name, as far as
    the cell shows them: the characters that fit its width (the rest is cut off with an ellipsis)."""
    script = """(() => {
        const rows = {};
        for (const row of document.querySelectorAll('[row-id]')) {  // a row's pinned and scrolled parts
            const found = rows[row.getAttribute('row-id')] ||= {name: '', shown: ''};
            const name = row.querySelector('[col-id="attributes.`Run Name`"]');
            if (name) found.name = (name.querySelector('a') || name).innerText.trim();  // not its colour
            const cell = row.querySelector('[col-id="COLUMN"]');
            if (!cell) continue;
            const text = cell.innerText.trim();
            const cut = [cell, ...cell.querySelectorAll('*')].find(e => e.scrollWidth > e.clientWidth + 1);
            const fits = cut ? Math.floor(text.length * cut.clientWidth / cut.scrollWidth) - 1 : text.length;
            found.shown = text.slice(0, Math.max(fits, 0));
        }
        return Object.values(rows).map(r => [r.name, r.shown]);
    })()""".replace("COLUMN", column)
    return dict(json.loads(browser.js(f"JSON.stringify({script})")))  # in the table's order


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    session = Browser(tmp_path / "profile")
    try:
        yield session
    finally:
        session.close()


def test_the_printed_links_show_the_runs_table_and_the_sweeps_distinct_run_names(cli, tmp_path, browser):
    proc = cli("--multirun", "trainer.batch_size=1,32,null", "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names = sorted(r.info.run_name for r in all_runs(store) if "mlflow.parentRunId" in r.data.tags)
    assert names == ["sgd bs=1", "sgd bs=32", "sgd bs=full"]
    # The links the sweep printed, for `mlflow ui` on its default port.
    (table_link,) = re.findall(r"MLflow UI:.*then open  (\S+)", proc.stdout)
    (compare_link,) = re.findall(r"compare: +(\S+)", proc.stdout)
    with mlflow_server_on(store, tmp_path) as url:
        # A fresh browser profile: MLflow 3 would show its GenAI overview unless the link says otherwise.
        browser.open(table_link.replace("http://127.0.0.1:5000", url))
        # The runs table, with the sweep's parent row (a GenAI overview would never show these).
        text = browser.text_once(lambda t: "Run Name" in t and "sweep bs×3 max_epochs=3" in t)
        assert GENAI_OVERVIEW not in text
        # Expand the parent row: its children are listed by their distinct names.
        browser.js("document.querySelector(\"button[data-component-id*='runnamecellrenderer']\").click()")
        text = browser.text_once(lambda t: all(name in t for name in names))
        browser.screenshot(tmp_path / "runs_table.png")

        browser.open(compare_link.replace("http://127.0.0.1:5000", url))
        text = browser.text_once(lambda t: "Comparing 3 Runs" in t and all(n in t for n in names))
        assert "Parallel Coordinates Plot" in text
        assert "_target_" not in text  # the params a reader compares by, not Hydra's plumbing
        # The plot's metric axis: the first metric logged, a scale-free one (not train_loss, ≈ 1e-6 here).
        axes = "[...document.querySelectorAll('text.axis-title')].map(e => e.textContent).join('|')"
        deadline = time.monotonic() + 60
        while not (titles := browser.js(axes) or "") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert titles.split("|")[-1] == "objective_digits", titles
        browser.screenshot(tmp_path / "compare_runs.png")
    assert (tmp_path / "runs_table.png").stat().st_size > 10_000


METHODS = ["sgd lr=0.1", "momentum lr=0.05", "nesterov lr=0.05", "adam lr=0.01"]
RATIO, LOSS = "metrics.`val_loss_ratio`", "metrics.`best_val_loss`"


def test_the_runs_table_tells_the_methods_apart_by_their_loss_relative_to_theta_star(cli, tmp_path, browser):
    """σ = 0.001: every loss is ≈ 1e-6 and the table's cells cut off the digits that differ
    (`0.00000102…`); val_loss_ratio (best val loss / val loss at θ*) shows them."""
    proc = cli("--multirun", "optimizer=sgd,momentum,nesterov,adam", "trainer.max_epochs=30")
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (table_link,) = re.findall(r"MLflow UI:.*then open  (\S+)", proc.stdout)
    with mlflow_server_on(store, tmp_path) as url:
        text = show_columns(browser, table_link.replace("http://127.0.0.1:5000", url), [LOSS, RATIO], RATIO)
        assert all(name in text for name in METHODS)
        ratios, losses = table_cells(browser, RATIO), table_cells(browser, LOSS)
        browser.screenshot(tmp_path / "methods_table.png")
    shown = [ratios[name] for name in METHODS]
    assert len(set(shown)) == 4, ratios  # four different values, as the cells show them
    assert all(re.fullmatch(r"[01]\.\d{3,}", cell) for cell in shown), ratios  # no exponent to cut off
    assert len({losses[name] for name in METHODS}) < 4, losses  # what the raw loss's cells cannot do
    # The rows come sorted by the ratio: the same order as the sweep's printed table.
    printed = [line.split("  ")[0] for line in proc.stdout.splitlines() if line.split("  ")[0] in METHODS]
    assert [name for name in ratios if name in METHODS] == printed
