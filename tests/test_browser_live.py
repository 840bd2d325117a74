"""The Live tab end to end: headless Chromium with a fake camera that plays a generated video.

Chromium's fake capture device reads a Y4M file (a text header, then raw YUV 4:2:0 frames) made here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_app_gradio import free_port
from test_apps_browser import CHROMIUM, WAIT_MS, runs, screenshot, wait_for_text  # noqa: F401 (a fixture)

from apps.gradio_app import build_app
from apps.launch import serve
from distill.data.scenes import SceneGenerator
from workbench.explore.explorer import Explorer

pytestmark = pytest.mark.slow


def write_y4m(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """uint8 HxWx3 RGB frames (even sides) as a Y4M video: full-range BT.601 YUV with 4:2:0 chroma."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            r, g, b = (frame[..., i].astype(np.float32) for i in range(3))
            y = 0.299 * r + 0.587 * g + 0.114 * b
            planes = [y, 128 + 0.564 * (b - y), 128 + 0.713 * (r - y)]
            planes[1:] = [p.reshape(height // 2, 2, width // 2, 2).mean((1, 3)) for p in planes[1:]]
            out.write(b"FRAME\n")
            for plane in planes:
                out.write(np.clip(plane.round(), 0, 255).astype(np.uint8).tobytes())
    return path


def camera_video(path: Path, count: int = 20, width: int = 320, height: int = 240) -> Path:
    """A scene panning to the right, `count` frames of width x height."""
    scene = SceneGenerator(height, seed=2).batch(0, 1).images[0]
    wide = (scene.repeat(1, 1, 3).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    step = (wide.shape[1] - width) // count
    return write_y4m([wide[:, i * step : i * step + width] for i in range(count)], path)


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    """Chromium whose webcam is a fake device playing a generated video, with camera access granted."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    video = camera_video(tmp_path_factory.mktemp("camera") / "camera.y4m")
    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


def test_live_tab_streams_pca_frames_from_the_webcam(camera_browser, runs, tmp_path):  # noqa: F811
    demo = serve(build_app(Explorer(runs)), port=free_port(), block=False)
    context = camera_browser.new_context(viewport={"width": 1400, "height": 1100}, permissions=["camera"])
    page = context.new_page()
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Live").click()
        assert page.get_by_role("tab", name="Live").count() == 1  # no stray second tab button
        camera = page.locator("#live-camera")
        camera.wait_for(timeout=WAIT_MS)
        access = camera.get_by_text(re.compile("access", re.IGNORECASE))
        if access.count():  # Gradio asks for a click before it opens the camera
            access.first.click()
        camera.locator("button", has_text=re.compile("record", re.IGNORECASE)).click(timeout=WAIT_MS)
        sources = []
        for _ in range(3):  # three different PCA pictures in a row: frames keep arriving
            page.wait_for_function(
                "(seen) => { const img = document.querySelector('#live-out img');"
                " return img && img.complete && img.naturalWidth > 0 && !seen.includes(img.src); }",
                arg=sources,
                timeout=WAIT_MS,
            )
            sources.append(page.locator("#live-out img").first.evaluate("img => img.src"))
        fps = wait_for_text(page, "#live-fps", "fps")
        assert re.search(r"\d+\.\d fps · \d+ ms per frame · \d+ dropped", fps), fps
        size = page.locator("#live-out img").first.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size[0] == 2 * size[1]  # the frame beside its PCA map
        screenshot(page, "app_live.png", tmp_path)
        camera.locator("button", has_text=re.compile("stop", re.IGNORECASE)).click(timeout=WAIT_MS)
        page.wait_for_timeout(1000)  # the frame in flight finishes before the server closes
    finally:
        context.close()
        demo.close()
