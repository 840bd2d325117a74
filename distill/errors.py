"""Errors as one line: what the CLI prints and what a record of a failure keeps."""

from __future__ import annotations

PLAIN = (ValueError, KeyError, OSError)  # bad input: the message alone says it
LIMIT = 400  # characters of a message kept (a state-dict mismatch can list thousands)


def one_line(error: BaseException) -> str:
    """The error's message with its line breaks folded (a KeyError's key unquoted), after its type's name
    unless it is a plain bad-input error, cut at `LIMIT` characters."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(message).split())
    if not text:
        text = type(error).__name__
    elif not isinstance(error, PLAIN):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= LIMIT else text[: LIMIT - 1] + "…"
