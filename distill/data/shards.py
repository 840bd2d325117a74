"""WebDataset-style tar shards: members grouped by key (`dir/000123.jpg` + `dir/000123.cls`)."""

from __future__ import annotations

import glob
import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from distill.data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, LabeledImage, SkipLog, decode_image

SCAN_CHUNK = 1 << 20  # bytes read at a time while looking for the next readable header (a multiple of 512)


def split_key(member_name: str) -> tuple[str, str]:
    """WebDataset's convention: the key is the path up to the first dot of the basename."""
    folder, _, base = member_name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append a file member (`name`, holding `data`) to a tar being written."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


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


def header_problem(block: bytes) -> str | None:
    """Why a 512-byte block is not a tar header (None if it is one)."""
    try:
        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError as error:
        return str(error) or type(error).__name__
    return None


def next_header(file: BinaryIO, position: int) -> int | None:
    """The offset of the first block at or after `position` (a block boundary) that reads as a tar header."""
    file.seek(position)
    while chunk := file.read(SCAN_CHUNK):
        for start in range(0, len(chunk) - tarfile.BLOCKSIZE + 1, tarfile.BLOCKSIZE):
            if header_problem(chunk[start : start + tarfile.BLOCKSIZE]) is None:
                return position + start
        position += len(chunk)
    return None


def tar_members(file: BinaryIO, damaged: list[str]) -> Iterator[tarfile.TarInfo]:
    """The members of an uncompressed tar, in order, from their headers (the caller may seek `file` between
    them to read their data). A header that cannot be read would end the archive for `tarfile`; here it is
    described in `damaged` (member position, byte offset, why) and reading goes on at the next readable
    header, so one damaged header loses one member, not the rest of the shard."""
    start, count = 0, 0
    while start is not None:
        file.seek(start)
        tar = None
        try:
            tar = tarfile.TarFile(fileobj=file)  # uncompressed, from the current position
            for member in tar:
                count += 1
                yield member
        except (tarfile.TarError, EOFError):
            pass  # where it stopped is checked below, like the end of the archive
        stop = start if tar is None else tar.offset
        file.seek(stop)
        block = file.read(tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE or not block.strip(b"\0"):
            return  # the end of the archive, or a shard cut short (its last member is truncated)
        count += 1
        start = next_header(file, stop + tarfile.BLOCKSIZE)
        after = "nothing readable after it" if start is None else f"read on from byte {start}"
        damaged.append(f"header of member {count} at byte {stop} ({header_problem(block)}; {after})")


class TarShards:
    """Decoded images from WebDataset-style tar shards, streamed shard by shard.

    A sample is the group of consecutive members sharing a key; its image is the first member
    with a JPEG/PNG/WebP extension and its label the integer in a `cls` member (-1 if absent).
    Undecodable images, truncated members and members whose header is damaged are skipped with a named
    warning (counted in `skips`); reading goes on after them (`tar_members`).

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
        key, fields, damaged = None, {}, []
        try:
            with open(path, "rb") as file:
                for member in tar_members(file, damaged):
                    if not member.isfile():
                        continue
                    member_key, extension = split_key(member.name)
                    if member_key != key and fields:
                        yield from self._decode(path, key, fields)
                        fields = {}
                    key = member_key
                    file.seek(member.offset_data)
                    fields[extension] = file.read(member.size)
                    if len(fields[extension]) < member.size:
                        read = len(fields.pop(extension))
                        cut = EOFError(f"truncated: the shard ends {read} of its {member.size} bytes in")
                        self.skips.skip(f"{path.name}:{member.name}", cut)
        except OSError as error:
            self.skips.skip(f"{path} (the rest of the shard)", error)
        if fields:
            yield from self._decode(path, key, fields)
        for problem in damaged:
            self.skips.skip(f"{path.name}: {problem}", tarfile.ReadError("damaged tar header"))

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
