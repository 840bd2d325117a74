"""Both apps end to end in headless Chromium (Debian's chromium driven by Playwright).

Screenshots go to the test's tmp folder, and (in 256 colours) to docs/screenshots/ when EUPE_SCREENSHOTS=1.
The apps run on the tiny test run, or on the runs folder in EUPE_BROWSER_RUNS (e.g. runs/ with an
evaluated toy run, for the README's screenshots).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from test_app_gradio import free_port, make_scored_run

from apps.gradio_app import build_app
from apps.launch import dashboard_command, serve
from distill.data.photos import photo_array
from distill.run_dir import trained_resolution
from workbench.explore.explorer import Explorer

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
WAIT_MS = 240_000  # the CPU is shared and slow: generous, but bounded


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> Path:
    if os.environ.get("EUPE_BROWSER_RUNS"):
        return Path(os.environ["EUPE_BROWSER_RUNS"])
    return make_scored_run(tiny_run, tmp_path_factory.mktemp("browser")).parent


def screenshot(page, name: str, folder: Path) -> None:
    """A full-page PNG once no Gradio component shows a running event."""
    page.wait_for_function("() => !document.body.innerText.includes('processing |')", timeout=WAIT_MS)
    page.screenshot(path=str(folder / name), full_page=True, animations="disabled")
    if os.environ.get("EUPE_SCREENSHOTS") == "1":  # a 256-colour copy for the README: a quarter of the size
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(folder / name) as shot:
            shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
                SCREENSHOTS / name, optimize=True
            )


def wait_for_text(page, selector: str, text: str, other_than: str = "") -> str:
    """Wait until the element's text contains `text` (and differs from `other_than`); return it."""
    page.wait_for_function(
        "([sel, text, old]) => { const t = document.querySelector(sel)?.innerText || '';"
        " return t.includes(text) && t !== old; }",
        arg=[selector, text, other_than],
        timeout=WAIT_MS,
    )
    return page.locator(selector).inner_text()


def wait_for_images(page, selector: str, count: int) -> None:
    """Wait until at least `count` images under `selector` have loaded (non-empty)."""
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel + ' img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= n",
        arg=[selector, count],
        timeout=WAIT_MS,
    )


def test_live_demo_upload_tabs_and_click(browser, runs, tmp_path):
    explorer = Explorer(runs)
    encoders = len(explorer.default_specs())
    demo = serve(build_app(explorer), port=free_port(), block=False)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(demo.local_url)
        done = f"{encoders} of {encoders} encoders"
        wait_for_text(page, "#maps-notes", done)  # the bundled photo, shown on page load
        side = page.locator("#resolution input[type=number]")
        assert side.input_value() == str(trained_resolution(explorer.default_specs(), 224))  # the student's
        side.fill("224")  # the semantic expert's own side, for its reading of the photo below
        wait_for_text(page, "#maps", "edges · 28x28 patches")
        shown = page.locator("#maps img").first.evaluate("img => img.src")
        # upload a photo: the feature maps of every encoder, streamed in one by one
        photo = tmp_path / "chelsea.png"
        Image.fromarray(photo_array("chelsea")).save(photo)
        page.locator("#image-in input[type=file]").set_input_files(str(photo))
        page.wait_for_function(  # a new input panel, and every encoder's map after it
            "([old, done, n]) => { const imgs = document.querySelectorAll('#maps img');"
            " return imgs.length >= n && imgs[0].src !== old"
            " && (document.querySelector('#maps-notes')?.innerText || '').includes(done); }",
            arg=[shown, done, 1 + encoders],
            timeout=WAIT_MS,
        )
        wait_for_images(page, "#maps", 1 + encoders)
        screenshot(page, "app_feature_maps.png", tmp_path)
        # a distilled encoder against its experts; this tab is refreshed last, so all views are now current
        page.get_by_role("tab", name="Teacher vs student").click()
        wait_for_text(page, "#labels", "Egyptian cat")  # the semantic expert's reading of the photo
        wait_for_text(page, "#agreement", "edges agreement · mean")
        wait_for_images(page, "#agreement", 3)
        wait_for_images(page, "#readings", 4)
        screenshot(page, "app_teacher_student.png", tmp_path)
        # similarity: click a point a quarter of the way into the image
        page.get_by_role("tab", name="Similarity").click()
        query = page.locator("#query img")
        query.wait_for(timeout=WAIT_MS)
        box = query.bounding_box()
        query.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
        wait_for_text(page, "#similar-notes", "similarity to the patch at (0.25, 0.25)")
        wait_for_images(page, "#similar", encoders)
        screenshot(page, "app_similarity.png", tmp_path)
        page.get_by_role("tab", name="Probes").click()
        wait_for_text(page, "#predictions", "segmentation")
        wait_for_images(page, "#predictions", 2)
        wait_for_text(page, "#probe-notes", "trained on generated scenes; on a photo they can only answer")
        page.locator("#scene-button").click()  # on a scene: its ground truth beside each prediction
        wait_for_text(page, "#predictions", "ground truth")
        wait_for_text(page, "#probe-notes", "trained on generated scenes, like this one")
        wait_for_images(page, "#predictions", 4)
        screenshot(page, "app_probes.png", tmp_path)
        # a file that is not an image: a message in the page, and the app lives on
        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        page.evaluate("window.scrollTo(0, 0)")  # the message shows at the top of the window
        page.locator("#image-in input[type=file]").set_input_files(str(notes))
        error = page.locator(".toast-body").first
        error.wait_for(timeout=WAIT_MS)
        assert "image" in error.inner_text().lower()
        page.wait_for_function(  # the message has faded in
            "() => { let e = document.querySelector('.toast-body'), o = 1;"
            " for (; e; e = e.parentElement) o *= +getComputedStyle(e).opacity; return o > 0.99; }",
            timeout=WAIT_MS,
        )
        screenshot(page, "app_bad_upload.png", tmp_path)
        page.get_by_role("tab", name="Feature maps").click()
        wait_for_images(page, "#maps", 1 + encoders)
    finally:
        page.close()
        demo.close()


def test_live_demo_rapid_changes_resolution_and_correspondence_clicks(browser, runs, tmp_path):
    explorer = Explorer(runs)
    specs = explorer.default_specs()
    demo = serve(build_app(explorer), port=free_port(), block=False)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(demo.local_url)
        wait_for_text(page, "#maps-notes", f"{len(specs)} of {len(specs)} encoders")
        # a typed resolution applies as typed, without leaving the box: the edges expert's grid is /8
        page.locator("#resolution input[type=number]").fill("160")
        wait_for_text(page, "#maps", "edges · 20x20 patches")
        # own features share no axes: the joint basis is not on offer there
        assert page.locator("#joint input").is_disabled()
        # rapid changes, 0.3 s apart while the maps compute: the last state wins, nothing is dropped
        for label in ("text (expert)", "semantic (expert)", "Mask background", "Remove position mean"):
            page.get_by_label(label, exact=True).click()
            page.wait_for_timeout(300)
        left = len(specs) - 2
        final = [
            f"{left} of {left} encoders",
            "one basis each · background masked (threshold 0 std) · position",
        ]
        page.wait_for_function(
            "texts => texts.every(t => (document.querySelector('#maps-notes')?.innerText || '').includes(t))",
            arg=final,
            timeout=WAIT_MS,
        )
        wait_for_images(page, "#maps", 1 + left)
        page.wait_for_timeout(1000)  # nothing later replaces the final state
        assert page.locator("#maps img").count() == 1 + left
        assert all(text in page.locator("#maps-notes").inner_text() for text in final)
        cut = page.evaluate(
            "() => [...document.querySelectorAll('#maps .caption-label')]"
            ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText)"
        )
        assert cut == []  # every caption readable in full
        # in an expert space the joint basis is offered: every panel in the expert's colours
        page.locator("#space input").click()
        page.get_by_role("option", name="edges", exact=True).click()
        page.wait_for_function("() => !document.querySelector('#joint input').disabled", timeout=WAIT_MS)
        page.get_by_label("Joint PCA basis", exact=True).click()
        wait_for_text(page, "#maps-notes", "edges · joint basis (the expert's)")
        # correspondence: B is A under a random warp; two clicks in A, each encoder's match in B
        page.get_by_role("tab", name="Correspondence").click()
        wait_for_text(page, "#match-notes", "best match in B")
        image_a = page.locator("#match-a img")
        image_a.wait_for(timeout=WAIT_MS)
        for x, y in ((0.25, 0.25), (0.7, 0.6)):
            box = image_a.bounding_box()
            image_a.click(position={"x": box["width"] * x, "y": box["height"] * y})
            notes = wait_for_text(page, "#match-notes", f"point ({x:.2f}, {y:.2f}) of A")
            assert notes.count(f": ({x:.2f}, {y:.2f}) → (") == left  # one match per encoder
            wait_for_images(page, "#matches", left)
        page.get_by_label("Mutual nearest-neighbour matches as lines").click()
        notes = wait_for_text(page, "#match-notes", "mutual matches drawn")
        assert notes.count("mutual matches drawn") == left
        page.wait_for_function(  # side-by-side pictures of A and B
            "n => [...document.querySelectorAll('#matches img')]"
            ".filter(i => i.complete && i.naturalWidth > 1.9 * i.naturalHeight).length >= n",
            arg=left,
            timeout=WAIT_MS,
        )
        screenshot(page, "app_correspondence.png", tmp_path)
    finally:
        page.close()
        demo.close()


def wait_until_serving(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not answer at {url} within {seconds:.0f} s")


def test_dashboard_run_tabs_checkpoint_and_compare(browser, runs, tmp_path):
    port = free_port()
    process = subprocess.Popen(dashboard_command(runs, port=port), stdout=subprocess.DEVNULL)
    page = browser.new_page(viewport={"width": 1400, "height": 1300})  # Streamlit scrolls inside the page
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/_stcore/health", process)
        page.goto(f"http://127.0.0.1:{port}")
        page.get_by_role("heading", name="EUPE runs").wait_for(timeout=WAIT_MS)
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=WAIT_MS)
        screenshot(page, "dashboard_overview.png", tmp_path)
        page.get_by_role("tab", name="Curves").click()
        page.get_by_text("Learning rate").wait_for(timeout=WAIT_MS)
        assert page.locator("[data-testid='stVegaLiteChart']").count() >= 4
        screenshot(page, "dashboard_curves.png", tmp_path)
        page.get_by_role("tab", name="Timeline").click()  # the snapshots' maps at one step, and the curves
        page.get_by_text("Fidelity against steps").wait_for(timeout=WAIT_MS)
        page.get_by_text("GIF of the timeline").wait_for(timeout=WAIT_MS)
        assert page.get_by_text("No snapshots in this run").count() == 0
        page.set_viewport_size({"width": 1400, "height": 2400})  # the maps and the curves below them
        shown = page.locator("[role='tabpanel']:visible [data-testid='stImage'] img")
        shown.nth(1).wait_for(timeout=WAIT_MS)  # the maps, then the curves
        screenshot(page, "dashboard_timeline.png", tmp_path)
        page.set_viewport_size({"width": 1400, "height": 1300})
        page.get_by_role("tab", name="Scoreboard").click()
        page.locator("[data-testid='stDataFrame']").nth(1).wait_for(timeout=WAIT_MS)
        screenshot(page, "dashboard_scoreboard.png", tmp_path)
        page.get_by_role("tab", name="Checkpoints").click()
        wait_for_images(page, "[data-testid='stImage']", 2)  # the input and the checkpoint's PCA map
        screenshot(page, "dashboard_checkpoint.png", tmp_path)
        page.get_by_text("Compare", exact=True).click()
        page.get_by_role("heading", name="Scoreboards").wait_for(timeout=WAIT_MS)
        page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=WAIT_MS)
        run_picker = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']")
        run_picker.wait_for(state="detached", timeout=WAIT_MS)  # the rerun is over: no run picker in Compare
        screenshot(page, "dashboard_compare.png", tmp_path)
    finally:
        page.close()
        process.terminate()
        process.wait(timeout=30)
