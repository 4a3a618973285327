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
from urllib.parse import urljoin, urlparse

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
def serve(tmp_path):
    """serve(ckpt, *keys): ``python app.py`` on a free port; (url, runs folder)."""
    pytest.importorskip("gradio", reason="the page needs gradio: pip install -e '.[app]'")
    if CHROMIUM is None:   # checked before the app starts: a skip costs nothing
        pytest.skip("no chromium on PATH: apt-get install -y chromium (Debian's package)")
    pytest.importorskip("playwright.sync_api",
                        reason="the browser driver is missing: pip install playwright")
    started = []

    def start(ckpt, *keys):
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
        log = open(tmp_path / "app.log", "w")
        process = subprocess.Popen(
            [sys.executable, "app.py", f"ckpt={ckpt}", f"port={port}",
             f"runs={tmp_path / 'runs'}", "device=cpu", "num_threads=1", "time_batches=[1]",
             *keys], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append((process, log))
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n"
                            f"{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                fetch(url)
                return url, tmp_path / "runs"
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not serve {url} within 60 s")
                time.sleep(0.3)

    yield start
    for process, log in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def app_url(serve, tmp_path):
    ckpt = save_tiny_prior(tmp_path / "grey8.ckpt", channels=1, size=(8, 8), steps=200)
    return serve(ckpt, "sampler=ddpm", "steps=20", "n_samples=2")


def paint_stroke(page) -> None:
    """A stroke across the middle of the editor's canvas with the brush."""
    page.click("#editor button[aria-label=Brush]")
    box = page.query_selector("#editor canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 50, y - 20)
    page.mouse.down()
    for step in range(11):
        page.mouse.move(x - 50 + 10 * step, y - 20 + 3 * step)
    page.mouse.up()


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

            paint_stroke(page)

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
        shown = np.asarray(Image.open(io.BytesIO(fetch(src))))
        k = shown.shape[0] // 16   # shown enlarged nearest-neighbour by a whole factor
        result = shown[::k, ::k]
        assert np.array_equal(shown, result.repeat(k, 0).repeat(k, 1))
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


# every text the status line shows, kept by the page itself (a run's updates come fast)
KEEP_STATUSES = """() => { window.statuses = [];
  new MutationObserver(() => {
    const node = document.querySelector('#status');
    const text = node ? node.textContent : '';   // also under the progress overlay
    if (window.statuses[window.statuses.length - 1] !== text) window.statuses.push(text);
  }).observe(document.body, {subtree: true, childList: true, characterData: true}); }"""


def test_two_visitors_keep_their_own_prior_progress_and_files(serve, tmp_path):
    """Two browser contexts at once: A switches to the long prior and runs; B, opened after
    that, still has the page's first prior, queues behind A (its position shown) and runs
    its own. Neither sees the other's prior, progress or downloads."""
    import yaml
    from playwright import sync_api

    save_tiny_prior(tmp_path / "priors" / "a_short.ckpt", channels=1, size=(8, 8), steps=40)
    save_tiny_prior(tmp_path / "priors" / "b_long.ckpt", channels=1, size=(8, 8), steps=1500)
    url, _ = serve(tmp_path / "priors", "sampler=ddpm", "steps=auto", "n_samples=1")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            a = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            a.goto(url)
            a.click("#checkpoint input")
            a.click("li[aria-label='b_long.ckpt']")
            a.wait_for_function("document.querySelector('#prior-info').innerText"
                                ".includes('1500 steps')", timeout=30000)
            b = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            b.goto(url)
            assert "40 steps" in b.inner_text("#prior-info")   # the page's first, not A's
            assert "1500 steps" in a.inner_text("#prior-info")
            for page in (a, b):
                page.set_input_files("#upload input[type=file]", str(DIGIT))
                page.wait_for_selector("#masked img", timeout=20000)
                paint_stroke(page)
                page.evaluate(KEEP_STATUSES)
            a.click("#run")
            a.wait_for_function("document.querySelector('#status').innerText"
                                ".startsWith('sampling:')", timeout=30000)
            b.click("#run")   # one job at a time: B waits, and is told where it stands
            b.wait_for_selector("text=/queue: 1\\/1/", timeout=15000)
            for page in (a, b):
                page.wait_for_function("document.querySelector('#status').innerText"
                                       ".startsWith('done')", timeout=120000)
            seen = {name: page.evaluate("window.statuses") for name, page in (("a", a), ("b", b))}
            links = {name: [x.get_attribute("href") for x in page.query_selector_all(
                "#downloads a")] for name, page in (("a", a), ("b", b))}
        finally:
            browser.close()

    # A: ddpm's 250 steps on its 1500-step prior; B: the 40 steps of the page's first prior
    assert any("/250 network calls" in t for t in seen["a"]), seen["a"]
    assert not any("/40 network calls" in t for t in seen["a"])
    assert any("/40 network calls" in t for t in seen["b"]), seen["b"]
    assert not any("/250 network calls" in t for t in seen["b"])
    # the downloads are copies named by content (Gradio's cache): the same painted mask is
    # the same file, every result file is the visitor's own
    own = {name: {h for h in hrefs if not h.endswith("/mask.png")} for name, hrefs in links.items()}
    assert len(own["a"]) == len(own["b"]) == 3 and not own["a"] & own["b"]
    assert not any(str(tmp_path) in href for href in links["a"] + links["b"])   # no run folder
    for name, ckpt in (("a", "b_long.ckpt"), ("b", "a_short.ckpt")):
        record = next(h for h in links[name] if h.split("?")[0].endswith("run.yaml"))
        config = yaml.safe_load(fetch(urljoin(url, record)))["config"]
        assert Path(config["ckpt"]).name == ckpt
