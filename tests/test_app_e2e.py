"""The web page end to end in a real headless Chromium (Debian's package, driven by Playwright).

``python app.py`` is started on a free localhost port with a tiny prior; the browser uploads
a digit, asks for a run with nothing painted (the page must say so), paints a stroke on the
editor canvas with the mouse, runs a 20-call sampler and the
test fetches the results shown in the gallery: their known pixels must be the upload's. Then
a 1910-call RePaint run is started and cancelled: the page must say so and leave no run
folder. The page must make no request to another host (no CDN, no analytics).

Needs the ``chromium`` package (``apt-get install -y chromium``) and pip's ``playwright``
(never ``playwright install``: the system browser is used); skips, saying which is missing,
otherwise. ``PRIORPAINT_APP_SCREENSHOT=docs/app.png`` also saves a screenshot of the page.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image
from tiny import save_tiny_prior

ROOT = Path(__file__).resolve().parents[1]
DIGIT = ROOT / "examples" / "digits" / "digit_03.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read()


@pytest.fixture
def app_url(tmp_path):
    pytest.importorskip("gradio", reason="the page needs gradio: pip install -e '.[app]'")
    if CHROMIUM is None:   # checked before the app starts: a skip costs nothing
        pytest.skip("no chromium on PATH: apt-get install -y chromium (Debian's package)")
    pytest.importorskip("playwright.sync_api",
                        reason="the browser driver is missing: pip install playwright")
    ckpt = save_tiny_prior(tmp_path / "grey8.ckpt", channels=1, size=(8, 8), steps=200)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen(
        [sys.executable, "app.py", f"ckpt={ckpt}", f"port={port}", f"runs={tmp_path / 'runs'}",
         "sampler=ddpm", "steps=20", "n_samples=2", "device=cpu", "num_threads=1", "time_batches=[1]"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n"
                            f"{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                fetch(url)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not serve {url} within 60 s")
                time.sleep(0.3)
        yield url, tmp_path / "runs"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_paint_run_and_keep_known_pixels(app_url):
    from playwright import sync_api

    app_url, runs = app_url
    local = urlparse(app_url).netloc
    elsewhere = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: elsewhere.append(r.url)
                    if urlparse(r.url).scheme in ("http", "https")
                    and urlparse(r.url).netloc != local else None)
            page.goto(app_url)
            page.set_input_files("#upload input[type=file]", str(DIGIT))
            page.wait_for_selector("#masked img", timeout=20000)
            assert "resized" in page.inner_text("#note")   # 16x16 image, 8x8 prior

            page.click("#run")   # nothing painted yet: a message in the page, no run
            page.wait_for_selector("text=the mask has nothing to inpaint", timeout=15000)
            for close in page.query_selector_all(".toast-close"):
                close.click()

            page.click("#editor button[aria-label=Brush]")
            box = page.query_selector("#editor canvas").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x - 50, y - 20)
            page.mouse.down()
            for step in range(11):
                page.mouse.move(x - 50 + 10 * step, y - 20 + 3 * step)
            page.mouse.up()

            page.click("#run")
            page.wait_for_function(
                "document.querySelector('#status').innerText.startsWith('done')", timeout=30000)
            status = page.inner_text("#status")
            assert "20 network calls each" in status
            results = [img.get_attribute("src") for img in page.query_selector_all("#results img")]
            links = {Path(urlparse(a.get_attribute("href")).path).name: a.get_attribute("href")
                     for a in page.query_selector_all("#downloads a")}
            if os.environ.get("PRIORPAINT_APP_SCREENSHOT"):
                for close in page.query_selector_all(".toast-close"):
                    close.click()
                page.wait_for_timeout(1000)
                page.screenshot(path=os.environ["PRIORPAINT_APP_SCREENSHOT"], full_page=True)

            # a long run (RePaint, 200 steps, j = r = 10: 1910 calls), cancelled while it samples
            page.check("#sampler input[value=repaint]")   # every sampler one click away
            page.fill("#steps textarea, #steps input", "auto")
            page.wait_for_function(
                "document.querySelector('#budget').innerText.includes('1,910 network calls')",
                timeout=30000)
            page.click("#run")
            page.wait_for_function(
                "document.querySelector('#status').innerText.startsWith('sampling:')",
                timeout=30000)
            page.click("#cancel")
            page.wait_for_function(
                "document.querySelector('#status').innerText.startsWith('cancelled')",
                timeout=15000)
            assert "of 1910 network calls" in page.inner_text("#status")
        finally:
            browser.close()

    mask = np.asarray(Image.open(io.BytesIO(fetch(links["mask.png"])))) == 255
    original = np.asarray(Image.open(DIGIT))
    assert mask.shape == original.shape == (16, 16)
    assert 0 < (~mask).sum() < mask.size          # the stroke made a hole, not all of it
    assert len(results) == 2
    for src in results:
        result = np.asarray(Image.open(io.BytesIO(fetch(src))))
        assert result.shape == (16, 16)
        assert np.array_equal(result[mask], original[mask])   # known pixels exact
        assert not np.array_equal(result[~mask], original[~mask])
    assert {"digit_03_s0.png", "digit_03_s1.png", "run.yaml"} <= set(links)
    assert len([d for d in runs.iterdir() if d.is_dir()]) == 1   # the cancelled run left none
    assert elsewhere == [], f"the page fetched from other hosts: {elsewhere}"
    log = (runs.parent / "app.log").read_text()   # the user error: one line, no traceback
    assert [line for line in log.splitlines() if "nothing to inpaint" in line] == [
        "app.py: user error: the mask has nothing to inpaint: paint over the part of the image "
        "to fill in (brush in the editor), or choose a generated mask kind"]
    assert "Traceback" not in log
