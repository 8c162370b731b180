"""``harness report/compare --html``: one self-contained page, checked as text and in the
system's headless Chromium (Debian ``chromium`` and ``chromium-driver``, driven by
selenium; never a downloaded browser): no console error, no network request, one row per
run, a header click sorts, a non-blank screenshot."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
from pathlib import Path

import pytest

from helpers import REPO, tiny_sets
from records import record, write_results

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _results(tmp_path: Path) -> Path:
    """Three runs (epoch times out of MAX_LEN order) and one failed run, records written directly."""
    return write_results(tmp_path / "r", [
        record("a", max_len=32, seconds=3.0), record("b", max_len=64, seconds=1.0),
        record("c", max_len=128, seconds=2.0),
        {**record("d", max_len=256, status="failed"), "error": "RuntimeError: <b>boom</b>"},
    ])


def test_the_page_holds_the_table_the_failures_and_the_environment_and_no_link_out(cli, tmp_path):
    code, out, err = cli("report", _results(tmp_path), "--html", tmp_path / "page.html")
    assert code == 0, err
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert page.count("<tr") == 1 + 4  # the header and one row a run
    assert "epoch s" in page and "0.300 [" not in page  # the columns of `harness report`
    assert "RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in page  # the reason, escaped
    assert "NVIDIA H100 80GB HBM3" in page  # the environment
    assert not re.search(r'(src|href)="(?!data:)', page)  # every picture inline
    assert "http://" not in page and "https://" not in page
    assert list(tmp_path.glob(".html-*")) == []  # no temporary file left


def test_compare_page_holds_each_configurations_change_and_verdict(cli, tmp_path):
    base = write_results(tmp_path / "base", [record("a", max_len=32, seconds=2.0)])
    new = write_results(tmp_path / "new", [record("a", max_len=32, seconds=3.0)])
    code, out, err = cli("compare", base, new, "--max-slowdown", "10%", "--html", tmp_path / "cmp.html")
    assert code == 1  # a regression, and the page is still written
    page = html.unescape((tmp_path / "cmp.html").read_text(encoding="utf-8"))
    _, text, _ = cli("compare", base, new, "--max-slowdown", "10%", "--format", "csv")
    header, row = list(csv.reader(io.StringIO(text)))[:2]
    assert "slower by 50.0%" in row[header.index("verdict")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page)
    assert cells == row  # the cells `harness compare` prints, verdict included


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"no system Chromium: {CHROMIUM} and {CHROMEDRIVER} come with `apt-get install chromium "
                    "chromium-driver`")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager never downloads a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _column(driver, name: str) -> list[str]:
    from selenium.webdriver.common.by import By

    header = [th.text.strip(" ▲▼") for th in driver.find_elements(By.CSS_SELECTOR, "#results th")]
    col = header.index(name)
    return [tr.find_elements(By.TAG_NAME, "td")[col].text for tr in
            driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")]


def open_page(page: Path, screenshot: Path | None = None) -> dict:
    """Open ``page`` in headless Chromium: what the browser logged and requested, the rows,
    and the ``epoch s`` column before and after one and two clicks on its header."""
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get(page.resolve().as_uri())
        seen = {"before": _column(driver, "epoch s")}
        th = next(h for h in driver.find_elements(By.CSS_SELECTOR, "#results th") if h.text == "epoch s")
        th.click()
        seen["up"] = _column(driver, "epoch s")
        th.click()
        seen["down"] = _column(driver, "epoch s")
        seen["rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#results tbody tr"))
        seen["png"] = driver.get_screenshot_as_png()
        if screenshot:
            screenshot.write_bytes(seen["png"])
        seen["console"] = driver.get_log("browser")
        seen["requests"] = [json.loads(e["message"])["message"]["params"].get("request", {}).get("url")
                            for e in driver.get_log("performance")
                            if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
        return seen
    finally:
        driver.quit()


def _share_not_white(png: bytes) -> tuple[int, float]:
    from matplotlib.image import imread

    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    flat = pixels.reshape(-1, 3)
    return len({tuple(p) for p in flat[:: max(1, len(flat) // 20000)]}), float((flat < 0.95).any(axis=1).mean())


def test_the_page_in_headless_chromium(cli, tmp_path):
    code, _, err = cli("report", _results(tmp_path), "--html", tmp_path / "page.html")
    assert code == 0, err
    seen = open_page(tmp_path / "page.html")
    assert [e for e in seen["console"] if e["level"] in ("SEVERE", "WARNING")] == []
    uri = (tmp_path / "page.html").resolve().as_uri()
    assert seen["requests"] and all(u == uri or u.startswith("data:") for u in seen["requests"]), seen["requests"]
    assert seen["rows"] == 4
    numbers = [float(t) for t in seen["up"][:3]]
    assert seen["before"] != seen["up"] and numbers == sorted(numbers) and seen["up"][3] == "—"
    assert [float(t) for t in seen["down"][1:]] == sorted(numbers, reverse=True)
    colours, dark = _share_not_white(seen["png"])
    assert colours > 2 and dark > 0.02



def test_the_main_suites_page_from_harness_run_in_headless_chromium(cli, tmp_path):
    """``harness run suites/max_len.yaml --html``: the nine runs of the main suite (a tiny model,
    a few sentences), the page `harness run` writes, with its environment file, in Chromium."""
    page = tmp_path / "max_len.html"
    code, _, err = cli("run", REPO / "suites" / "max_len.yaml", "--out", tmp_path / "out", "--no-progress",
                       "--no-plot", "--html", page, *tiny_sets(max_len=None))
    assert code == 0, err
    text = page.read_text(encoding="utf-8")
    assert text.count("<tr") == 1 + 9
    environment = json.loads((tmp_path / "out" / "environment.json").read_text(encoding="utf-8"))
    assert "from environment.json" in text and html.escape(environment["suite"]["sha256"]) in text
    assert f"{len(environment['packages'])} installed packages" in text and "<dt>torch</dt>" in text
    assert "<dt>cpu.flags</dt>" in text
    seen = open_page(page, screenshot=tmp_path / "max_len.png")
    assert [e for e in seen["console"] if e["level"] in ("SEVERE", "WARNING")] == []
    uri = page.resolve().as_uri()
    assert seen["requests"] and all(u == uri or u.startswith("data:") for u in seen["requests"]), seen["requests"]
    assert seen["rows"] == 9
    up, down = [float(t) for t in seen["up"]], [float(t) for t in seen["down"]]
    assert up == sorted(up) and down == sorted(up, reverse=True) and sorted(seen["before"]) == sorted(seen["up"])
    colours, dark = _share_not_white(seen["png"])
    assert colours > 2 and dark > 0.02


def test_the_compare_page_names_the_environments_differences_first(cli, tmp_path, monkeypatch):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: env\ndefaults: {dataset: cola}\n", encoding="utf-8")
    for side, threads in (("a", "2"), ("b", "1")):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        code, _, err = cli("run", suite, "--out", tmp_path / side, "--no-progress", "--no-plot", *tiny_sets())
        assert code == 0, err
    code, _, err = cli("compare", tmp_path / "a", tmp_path / "b", "--html", tmp_path / "cmp.html")
    page = html.unescape((tmp_path / "cmp.html").read_text(encoding="utf-8"))
    notes = re.findall(r'<p class="note">(.*?)</p>', page)
    assert notes[0] == "note: environment differs: OMP_NUM_THREADS: BASE 2, NEW 1", notes
