"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium) on a mode atlas
opened from ``file://``: the grid, a head, a mode; the mode's images load and its numbers are the stores'.

Without the browser (``make test`` installs it with apt-get when it runs as root) the tests that need it skip with
the reason, unless ``QKDISSECT_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which turns the skip into a failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkdissect.stores import open_store

CHROMIUM = os.environ.get("QKDISSECT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("QKDISSECT_CHROMEDRIVER", "/usr/bin/chromedriver")
#: no network, no first-run work, a fresh profile (added per session)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
]  # fmt: skip


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium")
    if missing:
        msg = f"no browser for the atlas test: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("QKDISSECT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " — QKDISSECT_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(msg)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium session with a fresh profile, its console kept."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="qkdissect-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_view(driver: Any, view: str, timeout: float = 30) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element("id", "view").get_attribute("data-view") == view,
        message=f"the atlas did not show its {view} view",
    )


def check_atlas(
    index: Path, screenshots: Path | None = None, at: tuple[int, int] | None = None, mode_at: int | None = None
) -> dict[str, Any]:
    """Open the atlas at ``index`` and click from the grid to a head ``at`` (layer, head) of the first model
    (default: its strongest by weighted cosine) to a mode (default: the first listed); assert that the mode's top
    images load and that its cosine and scores are the stores'. ``screenshots``: a folder for one PNG of each level
    (grid, head, mode). Returns what was clicked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(index.resolve().as_uri())
        _wait_view(driver, "grid")
        model = driver.execute_script("return QKAtlas.shown()[0]")
        stores = driver.execute_script("return QKAtlas.summary(arguments[0]).stores", model)
        # paths as the atlas names them: from the folder holding the results folder (the workflow's), or absolute
        base = index.resolve().parents[2]
        scores, maps = (open_store(base / stores[k], kind) for k, kind in (("scores", "scores"), ("maps", "atlas")))
        weighted = scores.head_weighted.values
        layer, head = at or tuple(int(i) for i in np.unravel_index(np.nanargmax(weighted), weighted.shape))
        cell = driver.find_element(
            By.CSS_SELECTOR, f'.cell[data-model="{model}"][data-layer="{layer}"][data-head="{head}"]'
        )
        assert float(cell.get_attribute("data-weighted")) == float(scores.head_weighted.values[layer, head])
        if screenshots:
            driver.save_screenshot(str(screenshots / "atlas_grid.png"))
        cell.click()
        _wait_view(driver, "head")
        which = "" if mode_at is None else f'[data-mode="{mode_at}"]'
        row = driver.find_element(By.CSS_SELECTOR, f"table.modes tbody tr{which}")
        mode = int(row.get_attribute("data-mode"))
        if screenshots:
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script(
                    "return [...document.querySelectorAll('table.modes canvas')].every(c => c.width > 0)"
                )
            )
            driver.save_screenshot(str(screenshots / "atlas_head.png"))
        row.find_element(By.CSS_SELECTOR, "td a").click()
        _wait_view(driver, "mode")
        k = int(np.sum(maps.slot_image.values[layer, head, mode, 0] >= 0))
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#cards img.photo')].every(i => i.complete)"
            )
        )
        widths = driver.execute_script(
            "return [...document.querySelectorAll('#cards img.photo')].map(i => i.naturalWidth)"
        )
        assert len(widths) == k and all(w > 0 for w in widths), widths
        drawn = driver.execute_script("return [...document.querySelectorAll('#cards canvas')].map(c => c.width)")
        assert drawn == widths  # every overlay drawn, at the thumbnail's size
        cosine = driver.find_element(By.ID, "mode-cosine")
        want = float(scores.cosine.values[layer, head, mode])
        assert float(cosine.get_attribute("data-cosine")) == want and cosine.text == f"{want:+.4f}"
        if "key_top_on_prefix" in maps and "cls" in maps.attrs["prefix_tokens"]:  # the share of the key side's tops
            share = 100 * int(maps.key_top_on_prefix.sel(prefix_kind="cls")[layer, head, mode, 0])
            share /= maps.attrs["images"]["valid"]
            assert f"CLS {share:.1f}% of" in driver.find_element(By.ID, "mode-prefix").text
        cards = driver.find_elements(By.CSS_SELECTOR, "#cards figure")
        ids = [c.get_attribute("data-image") for c in cards]
        assert ids == [str(i) for i in maps.top_image_id.values[layer, head, mode, 0, :k]]
        got = [float(c.get_attribute("data-score")) for c in cards]
        np.testing.assert_allclose(got, maps.top_score.values[layer, head, mode, 0, :k], rtol=1e-4)
        if screenshots:
            driver.save_screenshot(str(screenshots / "atlas_mode.png"))
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('script, img, link')].map(e => e.src || e.href)"
        )
        assert len(loaded) > k and all(u.startswith("file://") for u in loaded), loaded  # no server, no network
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        return {"model": model, "layer": layer, "head": head, "mode": mode, "images": k}


def check_search_and_filters(index: Path, negative: int, total: int, mode: tuple[int, int, int]) -> None:
    """The cosine-sign filter leaves ``negative`` of ``total`` modes on the grid; the search box goes to a mode
    ``(layer, head, mode)`` of the opposite sign, and names the model's range for one it does not have."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with chromium() as driver:
        driver.get(index.resolve().as_uri())
        _wait_view(driver, "grid")
        assert driver.find_element(By.ID, "match-count").text == f"{total} of {total} modes match"
        Select(driver.find_element(By.ID, "f-sign")).select_by_value("neg")
        _wait_view(driver, "grid")
        assert driver.find_element(By.ID, "match-count").text == f"{negative} of {total} modes match"
        layer, head, n = mode
        box = driver.find_element(By.ID, "search-box")
        box.send_keys(f"L{layer} H{head} M{n} -")
        driver.find_element(By.CSS_SELECTOR, "#search button").click()
        _wait_view(driver, "mode")
        assert driver.find_element(By.ID, "mode-title").text.endswith(f"L{layer} H{head} M{n} (-)")
        model = driver.execute_script("return QKAtlas.shown()[0]")
        assert driver.current_url.endswith(f"#/{model}/L{layer}/H{head}/M{n}-")
        box.clear()
        box.send_keys("L99 H0")
        driver.find_element(By.CSS_SELECTOR, "#search button").click()
        assert "has layers 0-" in driver.find_element(By.ID, "search-message").text
