"""``geopera view`` in a real headless Chromium: the map paints, a click searches.

Debian's ``chromium`` and ``chromium-driver`` drive it (``.ci/run`` installs them). Set
``GEOPERA_DOCS_SCREENSHOT=1`` to write the screenshot of docs/view.md from this test.
"""

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EMBEDDED_SCENE, REPO
from tests.view.conftest import serving

selenium = pytest.importorskip("selenium.webdriver")


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Chromium (no sandbox as root, software WebGL, no background networking)."""
    missing = [n for n in ("chromium", "chromedriver") if shutil.which(n) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{' and '.join(missing)} missing: .ci/run installs them")
        pytest.skip(f"{' and '.join(missing)} not installed (apt install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--window-size=1280,800",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--disable-quic"):  # fmt: skip
        options.add_argument(flag)
    driver = selenium.Chrome(service=Service(shutil.which("chromedriver") or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(check: Callable[[], object], seconds: float = 60) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"not true within {seconds} s: {check}")


def painted(driver: object) -> np.ndarray:
    """(H, W, 3) pixels of the map element."""
    shot = driver.find_element("id", "map").screenshot_as_png  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


@pytest.mark.slow
def test_the_map_paints_and_a_click_searches(
    browser: object, embedded: Path, shared_data: Path, tmp_path: Path
) -> None:
    driver = browser
    scene = shared_data / EMBEDDED_SCENE  # the embedded image itself, RGB by band identity
    with serving([scene, embedded], tmp_path / "scratch", save=tmp_path / "saved") as url:
        driver.get(url)  # type: ignore[attr-defined]
        run = driver.execute_script  # type: ignore[attr-defined]
        wait(lambda: run("return document.body.dataset.ready === '1'"))
        pixels = painted(driver)
        background = np.array([0x20, 0x21, 0x24])
        share = (np.abs(pixels.astype(int) - background).sum(-1) > 30).mean()
        assert share > 0.05, f"only {share:.1%} of the map is painted"
        # a click inside the embeddings: the centre of the PCA layer
        x, y = run(
            "const b = window.geoperaMap.getBounds().getCenter();"
            "const p = window.geoperaMap.project(b); return [p.x, p.y];"
        )
        from selenium.webdriver.common.action_chains import ActionChains

        canvas = driver.find_element("id", "map")  # type: ignore[attr-defined]
        size = canvas.size
        ActionChains(driver).move_to_element_with_offset(
            canvas, int(x - size["width"] / 2), int(y - size["height"] / 2)
        ).click().perform()
        wait(lambda: run("return document.body.dataset.search === 'q1'"))
        results = driver.find_elements("css selector", "#results li")  # type: ignore[attr-defined]
        assert len(results) == 10
        layers = [e.get_attribute("data-layer") for e in driver.find_elements(  # type: ignore[attr-defined]
            "css selector", "#layers li")]  # fmt: skip
        assert any(name.startswith("q1-") for name in layers)  # the heatmap
        # shift + drag draws a box around the click: a second query
        from selenium.webdriver.common.keys import Keys

        start = (int(x - size["width"] / 2) - 20, int(y - size["height"] / 2) - 20)
        ActionChains(driver).key_down(Keys.SHIFT).move_to_element_with_offset(
            canvas, *start
        ).click_and_hold().move_by_offset(40, 40).release().key_up(Keys.SHIFT).perform()
        wait(lambda: run("return document.body.dataset.search === 'q2'"))
        status = driver.find_element("id", "search-status").text  # type: ignore[attr-defined]
        assert "a drawn box" in status
        wait(lambda: run("return window.geoperaMap.areTilesLoaded()"))
        time.sleep(0.5)
        shot = tmp_path / "view.png"
        driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
        if os.environ.get("GEOPERA_DOCS_SCREENSHOT") == "1":
            shutil.copy(shot, REPO / "docs" / "img" / "view.png")
