"""Opening what model files are wrapped in, by content and never by name, within limits.

A model file can be a zip archive (torch's format, numpy's ``.npz``), a tar
archive, or compressed (joblib's zlib, gzip, bz2, xz and lzma; a ``.pkl.gz``), and
these nest. ``sniff`` names a layer from its first bytes; the helpers here open one
layer into a seekable stream. Whatever cannot be read whole raises ``Unreadable``
with the reason: an encrypted member, a compression ci-ml cannot open (zstd, lz4,
7z...), a bad CRC, a truncated stream, overlapping zip entries, more decompressed
bytes than the budget allows (a decompression bomb), containers nested too deep.
The scanner turns that into a finding: a file that cannot be read whole cannot be
shown to be safe.
"""

from __future__ import annotations

import ast
import bz2
import io
import lzma
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

HEAD_BYTES = 1 << 16
CHUNK = 1 << 20
SPOOL_IN_MEMORY = 32 << 20       # layers up to this size stay in memory, larger go to disk
MAX_DEPTH = 4                    # containers inside containers
MAX_MEMBERS = 100_000
NPY_MAX_HEADER = 1 << 16

# Compressions that wrap model files in the wild but that ci-ml cannot open here.
UNSUPPORTED = {b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4",
               b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!\x1a\x07": "rar",
               b"\xff\x06\x00\x00sNaPpY": "snappy", b"MSCF": "cab"}


class Unreadable(Exception):
    """A layer that cannot be read whole; the message says why."""


class Budget:
    """Bytes that decompression may produce for one scanned file, across all its layers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise Unreadable(f"{where} decompresses to more than {self.limit} bytes (a "
                             "decompression bomb, or raise scan.model.max_unpacked_mb)")


def sniff(head: bytes) -> str:
    """The layer's format from its first bytes: zip, tar, gzip, bz2, xz, lzma, zlib, zfile,
    npy, an unsupported compression's name prefixed 'unsupported:', or 'data'."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"ZF") and len(head) > 18 and _is_hex(head[2:18]):
        return "zfile"   # joblib < 0.9.3: "ZF", the length in 16 hex digits, then zlib
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    if head.startswith(b"\x5d\x00\x00") and len(head) >= 13:
        return "lzma"
    for magic, name in UNSUPPORTED.items():
        if head.startswith(magic):
            return f"unsupported:{name}"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "data"


def _is_hex(raw: bytes) -> bool:
    try:
        int(raw, 16)
    except ValueError:
        return False
    return True


def spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="ci-ml-model-")


WEAK_SIGNATURES = frozenset({"zlib", "lzma"})   # two or three bytes: raw data can match


@dataclass
class Decompressed:
    """What a compression layer gave: everything it produced (a prefix of it if it broke
    off; a loader would have read that much and acted on it), and why it broke off."""

    stream: IO[bytes]
    error: str | None = None


def decompress(kind: str, fh: IO[bytes], where: str, budget: Budget) -> Decompressed:
    """One compression layer undone into a seekable stream, charged to the budget. A layer
    that breaks off (truncated, corrupt, past the budget) keeps what it produced, with the
    reason; a weak signature (zlib, lzma) that produced nothing raises ``NotCompressed``."""
    fh.seek(0)
    out = spool()
    error: str | None = None
    try:
        if kind in ("zlib", "zfile", "gzip"):
            _inflate(fh, out, where, budget, skip=18 if kind == "zfile" else 0,
                     gzip=kind == "gzip")
        else:
            _unpack(kind, fh, out, where, budget)
    except Unreadable as exc:
        error = str(exc)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        error = f"{where}: {kind} data cannot be read whole: {str(exc) or type(exc).__name__}"
    if error is not None and kind in WEAK_SIGNATURES and out.tell() == 0:
        out.close()
        raise NotCompressed(error)
    out.seek(0)
    return Decompressed(out, error)


class NotCompressed(Exception):
    """Bytes that only looked like a weakly signed compression."""


def _inflate(fh: IO[bytes], out: IO[bytes], where: str, budget: Budget, skip: int,
             gzip: bool) -> None:
    """zlib or gzip (every member of a multi-member gzip), decompressed incrementally so a
    stream that breaks off still leaves what it produced."""
    fh.seek(skip)
    wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
    decomp = zlib.decompressobj(wbits)
    while chunk := fh.read(CHUNK):
        while chunk:
            data = decomp.decompress(chunk, CHUNK)
            budget.take(len(data), where)
            out.write(data)
            chunk = decomp.unconsumed_tail
            if decomp.eof:
                rest = decomp.unused_data + chunk + fh.read(CHUNK)
                if not gzip or not rest.strip(b"\x00"):
                    return   # zlib ignores what follows; gzip allows zero padding
                if not rest.startswith(b"\x1f\x8b"):
                    raise Unreadable(f"{where}: bytes after the gzip stream are not gzip")
                decomp = zlib.decompressobj(wbits)
                chunk = rest
    raise Unreadable(f"{where}: {'gzip' if gzip else 'zlib'} stream is truncated")


def _unpack(kind: str, fh: IO[bytes], out: IO[bytes], where: str, budget: Budget) -> None:
    """bz2, xz or lzma (alone), incrementally, several streams in a row like their readers."""
    def fresh() -> Any:
        if kind == "bz2":
            return bz2.BZ2Decompressor()
        return lzma.LZMADecompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)

    fh.seek(0)
    decomp = fresh()
    pending = b""
    while True:
        if decomp.eof:
            pending = decomp.unused_data + pending + fh.read(CHUNK)
            if not pending.strip(b"\x00") or kind == "lzma":
                return
            decomp = fresh()
        if not pending and decomp.needs_input:
            pending = fh.read(CHUNK)
            if not pending:
                raise Unreadable(f"{where}: {kind} stream is truncated")
        data = decomp.decompress(pending, CHUNK)
        pending = b""
        budget.take(len(data), where)
        out.write(data)


@dataclass(frozen=True)
class Member:
    name: str
    stream: IO[bytes]      # the whole member, seekable (the caller closes it)


def zip_members(fh: IO[bytes], where: str, budget: Budget,
                wanted: Any) -> Iterator[Member]:
    """Each member whose first bytes ``wanted(name, head)`` accepts, read whole; the others
    are read through once (so a bad CRC anywhere is found) and dropped."""
    fh.seek(0)
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Unreadable(f"{where}: not a readable zip archive: {exc}") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise Unreadable(f"{where}: more than {MAX_MEMBERS} zip members")
        _check_overlap(infos, where)
        for info in infos:
            if info.is_dir():
                continue
            label = f"{where}!{info.filename}"
            if info.flag_bits & 0x1:
                raise Unreadable(f"{label}: the member is encrypted")
            compressed = info.compress_type != zipfile.ZIP_STORED
            if compressed:
                budget.take(info.file_size, label)   # declared size first: refuse before reading
            yield from _read_member(archive, info, label, budget, compressed, wanted)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, budget: Budget,
                 compressed: bool, wanted: Any) -> Iterator[Member]:
    try:
        with archive.open(info) as member:
            head = member.read(HEAD_BYTES)
            keep = bool(wanted(info.filename, head))
            out = spool() if keep else None
            if out is not None:
                out.write(head)
            produced = len(head)
            while chunk := member.read(CHUNK):   # to the end: zipfile checks the CRC there
                produced += len(chunk)
                if produced > info.file_size:
                    raise Unreadable(f"{label}: more data than its declared size")
                if out is not None:
                    out.write(chunk)
    except Unreadable:
        raise
    except NotImplementedError as exc:
        raise Unreadable(f"{label}: compressed with a method ci-ml cannot open "
                         f"({info.compress_type})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError,
            RuntimeError) as exc:
        raise Unreadable(f"{label}: cannot be read whole: {exc}") from exc
    if compressed and produced < info.file_size:
        budget.used -= info.file_size - produced
    if out is not None:
        out.seek(0)
        yield Member(info.filename, out)


def _check_overlap(infos: list[zipfile.ZipInfo], where: str) -> None:
    """Members whose data overlap (the trick of 'better zip bombs') are refused."""
    spans = sorted((i.header_offset, i.header_offset + 30 + len(i.orig_filename.encode())
                    + i.compress_size, i.filename) for i in infos)
    for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise Unreadable(f"{where}: zip members {name!r} and {other!r} overlap")


def tar_members(fh: IO[bytes], where: str, budget: Budget, wanted: Any) -> Iterator[Member]:
    """Like ``zip_members``; a plain tar holds no compression, so no budget is charged."""
    fh.seek(0)
    try:
        archive = tarfile.open(fileobj=fh, mode="r:")
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise Unreadable(f"{where}: not a readable tar archive: {exc}") from exc
    with archive:
        count = 0
        try:
            for info in archive:
                count += 1
                if count > MAX_MEMBERS:
                    raise Unreadable(f"{where}: more than {MAX_MEMBERS} tar members")
                if not info.isfile():
                    continue
                extracted = archive.extractfile(info)
                if extracted is None:
                    continue
                head = extracted.read(HEAD_BYTES)
                if not wanted(info.name, head):
                    continue
                out = spool()
                out.write(head)
                while chunk := extracted.read(CHUNK):
                    out.write(chunk)
                out.seek(0)
                yield Member(info.name, out)
        except tarfile.TarError as exc:
            raise Unreadable(f"{where}: cannot be read whole: {exc}") from exc


@dataclass(frozen=True)
class NumpyHeader:
    descr: Any
    shape: tuple[int, ...]
    has_object: bool
    data_offset: int


def npy_header(fh: IO[bytes], where: str) -> NumpyHeader:
    """The header of a ``.npy`` (numpy's format 1.0-3.0), read as numpy does (a Python
    literal, with ``ast.literal_eval``), without numpy."""
    fh.seek(0)
    magic = fh.read(8)
    if len(magic) < 8:
        raise Unreadable(f"{where}: truncated .npy header")
    major = magic[6]
    width = 2 if major == 1 else 4
    raw_len = fh.read(width)
    if len(raw_len) != width:
        raise Unreadable(f"{where}: truncated .npy header")
    length = int.from_bytes(raw_len, "little")
    if length > NPY_MAX_HEADER:
        raise Unreadable(f"{where}: .npy header of {length} bytes is larger than numpy allows")
    text = fh.read(length)
    try:
        header = ast.literal_eval(text.decode("utf-8" if major >= 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise Unreadable(f"{where}: .npy header is not a Python literal: {exc}") from exc
    if not isinstance(header, dict) or "descr" not in header:
        raise Unreadable(f"{where}: .npy header has no 'descr'")
    shape = header.get("shape")
    dims = tuple(shape) if isinstance(shape, tuple) and all(
        isinstance(d, int) for d in shape) else ()
    return NumpyHeader(header["descr"], dims, _has_object(header["descr"]), 8 + width + length)


def _has_object(descr: Any, depth: int = 0) -> bool:
    if depth > 32:
        return True
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list | tuple):
        return any(_has_object(part, depth + 1) for part in descr)
    return True   # anything numpy would not accept as a descr: assume the worst


def read_head(fh: IO[bytes]) -> bytes:
    fh.seek(0)
    head = fh.read(HEAD_BYTES)
    fh.seek(0)
    return head


def size_of(fh: IO[bytes]) -> int:
    here = fh.tell()
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    fh.seek(here)
    return size
