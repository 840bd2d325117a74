"""Whether a timm model's pretrained weights can be had now: from the local cache, or from a host that
answers within seconds. Offline, loading fails at once in one line that names the offline choices, instead
of retrying the hub for a minute; weights already in the cache are used as a local file."""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import timm
import torch.hub
from huggingface_hub import constants, try_to_load_from_cache

CONNECT_TIMEOUT_S = 3.0  # a host that has not answered by then is taken as unreachable
# What timm's hub loader looks for in a model repository, in its order.
HUB_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
OFFLINE_CHOICES = "use --weights random, or --weights file --weights-file PATH for local weights"


class HubUnreachable(OSError):
    """Pretrained weights are neither cached nor reachable (an OSError: the CLI prints its message alone)."""


def host_answers(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether the host of `url` (or the proxy that requests to it go through) accepts a TCP connection
    within `timeout` seconds, name lookup included."""
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    parts = urllib.parse.urlsplit(proxy or url)
    if parts.hostname is None:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answered: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)  # a name lookup ignores the socket's timeout
    thread.start()
    thread.join(timeout)
    return bool(answered)


def cached_weights(hub_id: str | None, url: str | None, hub_file: str | None = None) -> Path | None:
    """The weights a pretrained load would read, if already downloaded (Hugging Face or torch.hub cache)."""
    if hub_id:
        for name in (hub_file,) if hub_file else HUB_FILES:
            found = try_to_load_from_cache(hub_id, name)
            if isinstance(found, str):
                return Path(found)
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlsplit(url).path).name
        if path.is_file():
            return path
    return None


def local_pretrained(name: str) -> Path | None:
    """Where the pretrained weights of the timm model `name` (`arch` or `arch.tag`) come from when the hub
    cannot be reached: None when their host answers (timm downloads them as usual), the cached file when it
    does not, else a one-line `HubUnreachable` naming the offline choices."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights for '{name}': {OFFLINE_CHOICES}")
    hub_id = cfg.hf_hub_id or None
    host = constants.ENDPOINT if hub_id else cfg.url
    if not host:
        raise ValueError(f"timm records no source of pretrained weights for '{name}': {OFFLINE_CHOICES}")
    offline = constants.is_offline_mode()
    if not offline and host_answers(host):
        return None
    cached = cached_weights(hub_id, cfg.url or None, cfg.hf_hub_filename)
    if cached is not None:
        return cached
    where = urllib.parse.urlsplit(host).hostname or host
    reason = "offline mode is on (HF_HUB_OFFLINE)" if offline else f"{where} is unreachable"
    raise HubUnreachable(f"pretrained weights of '{name}' are not cached and {reason}: {OFFLINE_CHOICES}")
