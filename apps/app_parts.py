"""What every tab of the Gradio app shares: one-line errors, galleries, notes and event settings.

Its own module so the app (`apps.gradio_app`) and each tab's module can use it without importing each other.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from distill.atomic import atomic_path
from workbench.explore.explorer import Panel, View

log = logging.getLogger(__name__)
CENTRE = (0.5, 0.5)  # the query point of a new image
EXPECTED = (ValueError, KeyError, FileNotFoundError)  # bad input: logged in one line
LATEST = {"trigger_mode": "always_last"}  # a change made while its event runs is run after it, not dropped


def readable_errors(fn: Callable) -> Callable:
    """Turn any exception of a callback (or generator callback) into a one-line `gr.Error` in the page."""

    def shown(error: Exception) -> gr.Error:
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, EXPECTED):
            log.info("%s: %s", fn.__name__, error)
        else:  # a bug: the whole story goes to the server log, one line to the page
            log.exception("callback %s failed", fn.__name__)
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        return gr.Error(message.splitlines()[0] if message else type(error).__name__)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: object, **kwargs: object) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise shown(error) from error

        return generator

    @functools.wraps(fn)
    def plain(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise shown(error) from error

    return plain


def panels(columns: int) -> dict:
    """Gallery settings: a fixed number of columns (however many panels have arrived), whole pictures."""
    return {"columns": columns, "fit_columns": False, "object_fit": "contain", "height": "fit-content"}


def recompute(fn: Callable) -> dict:
    """Settings of an event that recomputes a view: results stay visible while the next ones stream in;
    a change made while it runs is run after it with the widgets' latest values (never dropped, as the
    default "once" does), and every event refreshing the same view waits in one queue, in order, so an
    older request never lands after a newer one."""
    return {"show_progress": "minimal", "concurrency_id": fn.__name__, **LATEST}


@functools.cache
def picture_folder() -> Path:
    """This process's folder of gallery pictures (see `picture_file`)."""
    return Path(tempfile.mkdtemp(prefix="eupe-app-pictures-"))


def picture_file(image: np.ndarray) -> str:
    """A PNG file of a uint8 [H, W, 3] picture, named by its content and written once (atomically).

    Gradio saves a picture given as an array to its cache under a name taken from its content, and writes
    that file again every time an output holds the same picture: a streamed gallery re-sends its earlier
    pictures with each new one, so a browser still fetching one got a broken response ("Too much data for
    declared Content-Length") and the picture never showed. A file path is copied into Gradio's cache once,
    under a temporary name, then renamed.
    """
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(repr((image.shape, image.dtype.str)).encode() + image.tobytes()).hexdigest()
    path = picture_folder() / f"{digest[:32]}.png"
    if not path.exists():
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
    return str(path)


def gallery(panels: list[Panel]) -> list[tuple]:
    """Panels as Gradio gallery items: (a file of the picture, its caption); see `picture_file`."""
    return [(picture_file(panel.image), panel.caption) for panel in panels]


def notes(view: View, *extra: str) -> str:
    """A view's notes (and extra lines) as Markdown lines."""
    return "  \n".join([*extra, *view.notes])


def require_image(key: str | None) -> str:
    """The image key, or a message asking for an image."""
    if not key:
        raise gr.Error("load an image first: upload one, take a webcam picture, or pick a photo or a scene")
    return key


def clicked_point(event: gr.SelectData, size: int | tuple[int, int]) -> tuple[float, float]:
    """The normalised (x, y) in [0, 1] of a click on a picture of `size` (height, width) pixels, or on a
    square one of that side."""
    height, width = (size, size) if isinstance(size, int) else size
    return min(max(event.index[0] / width, 0.0), 1.0), min(max(event.index[1] / height, 0.0), 1.0)
