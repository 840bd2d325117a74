"""Errors as one line: what the CLI prints and what a record of a failure keeps."""

from __future__ import annotations

import re

PLAIN = (ValueError, KeyError, OSError)  # bad input: the message alone says it
LIMIT = 400  # characters of a message kept (a state-dict mismatch can list thousands)
# how torch re-raises an error of a DataLoader worker: its type, where, then the worker's whole traceback
WORKER_ERROR = re.compile(r"Caught \w+ (?P<where>in [^\n]*?)\.?\nOriginal (?P<traceback>Traceback .*)", re.S)


def folded(text: str) -> str:
    """`text` with its runs of white space (line breaks included) folded to single spaces."""
    return " ".join(text.split())


def raised_in(traceback: str) -> str:
    """The exception a formatted traceback ends with (`Type: message`): the lines after its last frame."""
    lines = traceback.rstrip("\n").splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith(" ")), default=0)
    return folded("\n".join(lines[last_frame + 1 :]))


def one_line(error: BaseException) -> str:
    """The error's message with its line breaks folded (a KeyError's key unquoted), after its type's name
    unless it is a plain bad-input error, cut at `LIMIT` characters. An error re-raised from a DataLoader
    worker is the worker's own error, type and message in full, then where it was raised."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    worker = WORKER_ERROR.match(str(message))
    if worker:
        return f"{raised_in(worker['traceback'])} ({worker['where']})"
    text = folded(str(message))
    if not text:
        text = type(error).__name__
    elif not isinstance(error, PLAIN):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= LIMIT else text[: LIMIT - 1] + "…"
