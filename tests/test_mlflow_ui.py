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
from collections.abc import Callable, Iterable, Iterator
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

    def screenshot(self, path: Path, height: float | None = None) -> None:
        """The window, or its top `height` pixels."""
        clip = {"clip": {"x": 0, "y": 0, "width": self.js("innerWidth"), "height": height, "scale": 1}}
        shot = self.call("Page.captureScreenshot", format="png", **(clip if height else {}))
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def show_columns(
    browser: Browser,
    link: str,
    columns: list[str],
    sort_by: str | None,
    expand: Iterable[str] = (),
    widths: dict[str, int] | None = None,
) -> str:
    """Open the runs table at `link` with these columns shown (what a user picks under Columns:
    MLflow keeps the choice in the browser's localStorage), sorted by `sort_by` ascending (None:
    MLflow's default, newest first, the only order in which it nests runs under their parents), every
    sweep and the runs `expand` expanded, and the columns `widths` names in its order and widths
    (what a user gets by dragging them); the table's text once the first column's header shows."""
    browser.open(link)
    browser.text_once(lambda t: "Run Name" in t)
    key = browser.js("Object.keys(localStorage).find(k => k.includes('ExperimentPage'))")
    state = json.loads(browser.js(f"localStorage.getItem({json.dumps(key)})"))
    rows = "[...document.querySelectorAll('[row-id]')].map(e => e.getAttribute('row-id'))"
    deadline = time.monotonic() + 120
    while not (parents := browser.js(rows)):  # the header shows before the rows: wait for them
        assert time.monotonic() < deadline, "the runs table showed no rows"
        time.sleep(0.5)
    state |= {"selectedColumns": columns, "columnWidths": widths or {c: 150 for c in columns},
              "columnOrder": list(widths or {}),  # MLflow applies a width only to a column it orders
              "runsExpanded": {run: True for run in [*parents, *expand]}}  # fmt: skip
    browser.js(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(state))})")
    browser.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')")  # the table, full width
    browser.open("about:blank")
    sort = "" if sort_by is None else f"&orderByKey={quote(sort_by)}&orderByAsc=true"  # in the URL
    browser.open(link + sort)
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


GROUPS = ["nesterov lr=0.05 · 5 seeds", "sgd lr=0.1 · 5 seeds"]
N = "metrics.`best_val_loss_n`"
MEAN, LOW, HIGH = (f"metrics.`val_loss_ratio_{stat}`" for stat in ("mean", "ci_low", "ci_high"))


def test_the_runs_table_shows_each_repeats_group_with_its_n_mean_and_interval(cli, tmp_path, browser):
    """The repeats example of docs/comparison.md: under the sweep's parent a group run per
    configuration, its n, mean and 95% interval as columns, as MLflow shows them by default (newest
    first, nested). val_loss_ratio's interval: best_val_loss's cells would cut off its e-7."""
    proc = cli("--multirun", "seed=range(0,5)", "optimizer=sgd,nesterov", "trainer.max_epochs=20")
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {r.info.run_name: r for r in all_runs(store)}
    assert set(GROUPS) <= set(runs)
    (parent,) = [name for name, run in runs.items() if "mlflow.parentRunId" not in run.data.tags]
    (table_link,) = re.findall(r"MLflow UI:.*then open  (\S+)", proc.stdout)
    widths = {"attributes.`Run Name`": 340, N: 170, MEAN: 170, LOW: 170, HIGH: 170}
    with mlflow_server_on(store, tmp_path) as url:
        link = table_link.replace("http://127.0.0.1:5000", url)
        # The last group opened too, to show its seeds nested under it.
        show_columns(browser, link, [N, MEAN, LOW, HIGH], None, [runs[GROUPS[-1]].info.run_id], widths)
        browser.text_once(lambda t: all(name in t for name in [*GROUPS, "sgd lr=0.1 seed=4"]))
        cells = {column: table_cells(browser, column) for column in (N, MEAN, LOW, HIGH)}
        rows = "[...document.querySelectorAll('[row-id]')].map(e => e.getBoundingClientRect().bottom)"
        browser.screenshot(tmp_path / "repeats_groups.png", height=max(browser.js(rows)) + 24)
    # Nested: the sweep, then its groups (newest first), then the last group's seeds.
    assert list(cells[MEAN])[:3] == [parent, *GROUPS]
    for name in [parent, *GROUPS]:
        stored = runs[name].data.metrics
        assert cells[N][name] == "5"
        low, mean, high = (cells[column][name] for column in (LOW, MEAN, HIGH))
        for cell, metric in ((low, "ci_low"), (mean, "mean"), (high, "ci_high")):
            assert re.fullmatch(r"[01]\.\d{4,}", cell), cells  # no exponent, the digits that differ
            value = stored[f"val_loss_ratio_{metric}"]
            assert abs(float(cell) - value) < 10.0 ** -(len(cell) - 2), (name, metric, cell, value)
        assert float(low) < float(mean) < float(high), (name, low, mean, high)
    # The parent shows the best group's (by mean best_val_loss) n, mean and interval.
    best = min(GROUPS, key=lambda name: runs[name].data.metrics["best_val_loss_mean"])
    assert all(cells[column][parent] == cells[column][best] for column in (N, MEAN, LOW, HIGH))
    seeds = [name for name in cells[MEAN] if name not in (parent, *GROUPS)]
    assert sorted(seeds) == [f"sgd lr=0.1 seed={seed}" for seed in range(5)]  # the last group's
    assert {cells[MEAN][name] for name in seeds} == {"-"}  # a seed run has no group metrics
