"""WebDataset-style tar shards: members grouped by key (`dir/000123.jpg` + `dir/000123.cls`)."""

from __future__ import annotations

import glob
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from distill.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, LabeledImage, SkipLog, decode_image


def split_key(member_name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is the path up to the first dot of the basename."""
    folder, _, base = member_name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def resolve_shards(spec: str | Sequence[str | Path]) -> list[Path]:
    """Shard paths from a glob pattern, a single path or a list; a one-line error if none exist."""
    if isinstance(spec, (str, Path)):
        paths = sorted(Path(p) for p in glob.glob(str(spec))) if glob.has_magic(str(spec)) else [Path(spec)]
    else:
        paths = [Path(p) for p in spec]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise FileNotFoundError(f"tar shard(s) not found: {', '.join(missing) or spec}")
    return paths


class TarShards:
    """Decoded images from WebDataset-style tar shards, streamed shard by shard.

    A sample is the group of consecutive members sharing a key; its image is the first member
    with a JPEG/PNG/WebP extension and its label the integer in a `cls` member (-1 if absent).
    Undecodable images, and the rest of a truncated shard, are skipped with a named warning.

    Args:
        shards: a glob pattern (`data/train-*.tar`), one path, or a list of paths.
    """

    def __init__(self, shards: str | Sequence[str | Path]) -> None:
        self.paths = resolve_shards(shards)
        self.skips = SkipLog()

    def __iter__(self) -> Iterator[LabeledImage]:
        for path in self.paths:
            yield from self._samples(path)

    def _samples(self, path: Path) -> Iterator[LabeledImage]:
        key, fields = None, {}
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    member_key, extension = split_key(member.name)
                    if member_key != key and fields:
                        yield from self._decode(path, key, fields)
                        fields = {}
                    key = member_key
                    fields[extension] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as error:
            self.skips.skip(f"{path} (rest of the shard after {key})", error)
            return
        if fields:
            yield from self._decode(path, key, fields)

    def _decode(self, path: Path, key: str, fields: dict[str, bytes]) -> Iterator[LabeledImage]:
        image_ext = next((e for e in fields if f".{e}" in IMAGE_EXTENSIONS), None)
        if image_ext is None:
            return
        name = f"{path.name}:{key}.{image_ext}"
        try:
            image = decode_image(fields[image_ext])
            label = int(fields["cls"].decode().strip()) if "cls" in fields else -1
        except DECODE_ERRORS as error:
            self.skips.skip(name, error)
            return
        yield LabeledImage(image, label, name)
