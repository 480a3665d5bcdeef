"""Opening a data file safely and reading it in bounded batches (CSV or Parquet, via pyarrow).

Every way a data path can be wrong becomes one ``InputError`` naming the config key
and the file: not found, a directory, a device, FIFO or socket (``/dev/zero`` would
never end, a FIFO would block), empty, binary, the wrong encoding, a header that is
missing, repeats a name or leaves one empty, ragged rows, header only, a field or a
row too large. Nothing is read whole: ``iter_batches`` streams record batches of
about ``BATCH_BYTES`` of text, so a 1 GB file is read in bounded memory.

Bounded means bounded ahead, too. pyarrow's CSV reader reads up to 32 blocks ahead
of its consumer (and its threaded mode parses ahead without limit): with 8 MiB
blocks and a consumer slower than the parser, as a profiler is, that was 211 MB of
arrow memory at the first batch of a 181 MB file. So the reader parses small blocks
(``BLOCK_BYTES``: 32 of them are 32 MiB), single-threaded, in one background thread
that stays at most ``PREFETCH`` batches ahead (parsing releases the GIL, so it
overlaps the consumer's work), and its blocks are joined into batches of about
``BATCH_BYTES`` so the consumer's per-batch cost is paid rarely.

CSV columns come back as strings (``null`` for the missing-value tokens below, values
trimmed of surrounding blanks); Parquet columns come back as float64 when numeric and
as strings otherwise, so downstream code sees one of two column types.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_ml.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

# The tokens pandas reads as missing: what users' files already use.
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None",
                  "<NA>", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN")
PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 1 << 16
# A field longer than this is refused: no tabular value is a megabyte, and an
# attacker's single huge field must not become a huge allocation downstream.
MAX_FIELD_BYTES = 1 << 20
# pyarrow parses CSV in blocks (and reads up to 32 ahead): the reader's memory.
BLOCK_BYTES = 1 << 20
# arrow refuses a row longer than about two blocks: past such a row the reader goes on
# with blocks this large; a row longer than that is refused.
MAX_ROW_BYTES = 8 << 20
# What consumers get: blocks joined up to this much text per batch.
BATCH_BYTES = 8 << 20
PARQUET_BATCH_ROWS = 65536
# Batches parsed ahead of the consumer: enough to overlap parsing with the consumer's
# work, few enough that memory stays a few blocks.
PREFETCH = 2


@dataclass(frozen=True)
class DataFile:
    """A data file that passed the up-front checks: format, columns, size."""

    path: Path
    key: str                 # the config key that named it, for messages
    format: str              # "csv" | "parquet"
    columns: tuple[str, ...]
    size: int
    encoding: str = "utf-8"
    delimiter: str = ","

    def where(self) -> str:
        return f"{self.key}: {self.path}"


def _fail(key: str, path: Path, what: str) -> InputError:
    return InputError(f"{key}: {path}: {what}")


def check_regular_file(path: Path, key: str) -> os.stat_result:
    """Refuse what is not a regular, non-empty file, before opening it (a FIFO would block)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(key, path, "data file not found") from None
    except OSError as exc:
        raise _fail(key, path, f"cannot read ({exc.strerror})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise _fail(key, path, "is a directory, expected a CSV or Parquet file")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device"
                if stat.S_ISBLK(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise _fail(key, path, f"is {kind}, expected a CSV or Parquet file")
    if st.st_size == 0:
        raise _fail(key, path, "is empty, expected a header row and data rows")
    return st


def _read_head(path: Path, key: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise _fail(key, path, f"cannot read ({exc.strerror})") from None


def _check_text(head: bytes, path: Path, key: str, encoding: str) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and \
            codecs.lookup(encoding).name == "utf-8":
        raise _fail(key, path, "is UTF-16 text; save it as UTF-8 or set data.encoding")
    if b"\x00" in head and codecs.lookup(encoding).name == "utf-8":
        raise _fail(key, path, "is binary data, not a CSV text file (nor Parquet)")
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        text = decoder.decode(head, final=len(head) < SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        line = head[:exc.start].count(b"\n") + 1
        raise _fail(key, path, f"is not {encoding} text (byte {exc.start}, line {line}); "
                               "save it as UTF-8 or set data.encoding") from None
    return text.removeprefix("\ufeff")


def _header(text: str, path: Path, key: str, delimiter: str) -> tuple[tuple[str, ...], bool]:
    """The header's names, and whether any data follows it in the sniffed text."""
    first_end = text.find("\n")
    if first_end < 0 and len(text.encode()) >= SNIFF_BYTES:
        raise _fail(key, path, f"the header row is longer than {SNIFF_BYTES} bytes")
    # The sniffed text is shorter than the csv module's field limit: no global to raise.
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader, [])
        rest = next((r for r in reader if any(c.strip() for c in r)), None)
    except csv.Error as exc:
        raise _fail(key, path, f"cannot parse the header ({exc})") from None
    names = tuple(h.strip() for h in header)
    if not names or not any(names):
        raise _fail(key, path, "has no header row (the first line is empty)")
    for i, name in enumerate(names):
        if not name:
            raise _fail(key, path, f"header column {i + 1} has no name")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise _fail(key, path, f"duplicate column {name!r} in the header "
                                   f"(columns {seen[name] + 1} and {i + 1})")
        seen[name] = i
    # Anything after the header within the sniffed bytes counts as data; a file
    # longer than the sniff window certainly has some.
    return names, rest is not None or len(text.encode()) >= SNIFF_BYTES


def open_data(path: Path, key: str, *, encoding: str = "utf-8",
              delimiter: str = ",") -> DataFile:
    """Check ``path`` up front and read its header; raises InputError naming ``key``."""
    st = check_regular_file(path, key)
    head = _read_head(path, key)
    if head.startswith(PARQUET_MAGIC) or path.suffix.lower() in (".parquet", ".pq"):
        return _open_parquet(path, key, st.st_size)
    text = _check_text(head, path, key, encoding)
    names, has_data = _header(text, path, key, delimiter)
    if not has_data:
        raise _fail(key, path, "has a header but no data rows")
    return DataFile(path, key, "csv", names, st.st_size, encoding, delimiter)


def _open_parquet(path: Path, key: str, size: int) -> DataFile:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants for bad files
        raise _fail(key, path, f"not a readable Parquet file ({_first_line(exc)})") from None
    names = tuple(meta.schema.to_arrow_schema().names)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _fail(key, path, f"duplicate column {dup!r}")
    if meta.num_rows == 0:
        raise _fail(key, path, "has columns but no data rows")
    return DataFile(path, key, "parquet", names, size)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def iter_batches(data: DataFile, columns: Sequence[str] | None = None,
                 block_bytes: int = BLOCK_BYTES,
                 batch_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    """Stream the file as record batches of ``columns`` (default: all).

    CSV: every column a string array (missing tokens -> null, blanks trimmed).
    Parquet: numeric columns float64, the others strings.
    """
    wanted = list(columns) if columns is not None else list(data.columns)
    select_memory_pool()
    if data.format == "parquet":
        yield from prefetch(lambda: _parquet_batches(data, wanted))
    else:
        yield from prefetch(lambda: _csv_batches(data, wanted, block_bytes, batch_bytes))


_DONE = object()


def select_memory_pool() -> None:
    """Use arrow's jemalloc pool when this pyarrow has it and the user chose no other.

    The batches are allocated in the reader's thread and freed in the consumer's;
    measured on a 181 MB CSV, peak RSS was 350 MB with arrow's default mimalloc pool,
    360 MB with the system allocator and 288 MB with jemalloc, at the same speed.
    """
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc: keep its default
        return
    if pa.default_memory_pool().backend_name != pool.backend_name:
        pa.set_memory_pool(pool)


def prefetch(produce: Callable[[], Iterator[pa.RecordBatch]],
             depth: int = PREFETCH) -> Iterator[pa.RecordBatch]:
    """Run the generator ``produce()`` in a background thread, at most ``depth`` items
    ahead of the caller. Its exceptions are raised here, in the caller's thread; a caller
    that stops early (or fails) stops the producer at its next item."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in produce():
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    worker = threading.Thread(target=run, name="ci-ml-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _joined(batches: Iterator[pa.RecordBatch], nbytes: int) -> Iterator[pa.RecordBatch]:
    """Consecutive batches joined until they hold about ``nbytes`` (one copy, in arrow)."""

    parts: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        parts.append(batch)
        held += batch.nbytes
        if held >= nbytes:
            yield _join(parts)
            parts, held = [], 0
    if parts:
        yield _join(parts)


def _join(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    import pyarrow as pa

    if len(parts) == 1:
        return parts[0]
    table = pa.Table.from_batches(parts).combine_chunks()
    return pa.RecordBatch.from_arrays([c.chunk(0) for c in table.columns],
                                      names=table.column_names)


def _csv_batches(data: DataFile, wanted: list[str], block_bytes: int,
                 batch_bytes: int) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    bad_rows: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    parse = pcsv.ParseOptions(delimiter=data.delimiter, invalid_row_handler=on_invalid,
                              newlines_in_values=True)
    convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in data.columns},
                                  include_columns=wanted, null_values=list(MISSING_TOKENS),
                                  strings_can_be_null=True, quoted_strings_can_be_null=True)
    rows_seen = 0
    block = block_bytes
    while True:
        read = pcsv.ReadOptions(block_size=block, encoding=data.encoding,
                                column_names=list(data.columns), skip_rows=1,
                                skip_rows_after_names=rows_seen,
                                # Threads read ahead without bound: see the module's doc.
                                use_threads=False)
        try:
            reader = pcsv.open_csv(data.path, read_options=read, parse_options=parse,
                                   convert_options=convert)
            for batch in _joined(reader, batch_bytes):
                yield _cleaned(data, batch, rows_seen)
                rows_seen += batch.num_rows
            return
        except InputError:
            raise
        except Exception as exc:  # pyarrow's ArrowInvalid / OSError: translate with a location
            if _straddles(exc) and block < MAX_ROW_BYTES and not bad_rows:
                # A row too long for the small blocks: read on from it with large ones.
                block = MAX_ROW_BYTES
                continue
            raise _csv_error(data, exc, bad_rows, rows_seen, block) from None


def _cleaned(data: DataFile, batch: pa.RecordBatch, rows_seen: int) -> pa.RecordBatch:
    """Fields past ``MAX_FIELD_BYTES`` refused; values trimmed; blank values missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for name, arr in zip(batch.schema.names, batch.columns, strict=True):
        lengths = pc.binary_length(arr)
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > MAX_FIELD_BYTES:
            row = rows_seen + pc.index(lengths, longest).as_py() + 1
            raise _fail(data.key, data.path,
                        f"data row {row}: column {name!r} has a field of {longest} "
                        f"bytes, more than the {MAX_FIELD_BYTES}-byte limit")
        arrays.append(pc.utf8_trim_whitespace(arr))
    # Blank-only values are missing too ("  " trims to "").
    arrays = [pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a) for a in arrays]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _straddles(exc: BaseException) -> bool:
    message = _first_line(exc)
    return "straddling" in message or "block size" in message


def _csv_error(data: DataFile, exc: BaseException, bad_rows: list[Any], rows_seen: int,
               block_bytes: int) -> InputError:
    message = _first_line(exc)
    if bad_rows:
        row = bad_rows[0]
        line = locate_ragged_line(data)
        where = f"line {line}" if line else f"near data row {rows_seen + 1}"
        return _fail(data.key, data.path, f"{where}: expected {row.expected_columns} fields, "
                                          f"got {row.actual_columns}")
    if "UTF8" in message or "UTF-8" in message or isinstance(exc, UnicodeDecodeError):
        offset, line = locate_bad_encoding(data)
        where = f" (byte {offset}, line {line})" if offset is not None else ""
        return _fail(data.key, data.path, f"is not {data.encoding} text{where}; save it as "
                                          "UTF-8 or set data.encoding")
    if _straddles(exc):
        return _fail(data.key, data.path, f"a row longer than {block_bytes >> 20} MiB (near "
                                          f"data row {rows_seen + 1}): not a tabular file?")
    return _fail(data.key, data.path, f"cannot parse as CSV: {message}")


def locate_ragged_line(data: DataFile) -> int | None:
    """The 1-based line of the first row whose field count differs from the header's."""
    n = len(data.columns)
    # Only on the error path: a field past the csv module's limit is not what we look for.
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_ROW_BYTES * 4)
    try:
        with open(data.path, newline="", encoding=data.encoding, errors="replace") as fh:
            reader = csv.reader(fh, delimiter=data.delimiter)
            next(reader, None)
            for row in reader:
                if row and len(row) != n:
                    return reader.line_num
    except (OSError, csv.Error):
        return None
    finally:
        csv.field_size_limit(limit)
    return None


def locate_bad_encoding(data: DataFile) -> tuple[int | None, int]:
    """Byte offset and line of the first undecodable byte."""
    decoder = codecs.getincrementaldecoder(data.encoding)()
    offset, lines = 0, 1
    with open(data.path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start, lines + chunk[:exc.start].count(b"\n")
            offset += len(chunk)
            lines += chunk.count(b"\n")
    return None, lines


def _parquet_batches(data: DataFile, wanted: list[str]) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(data.path)
        for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            yield pa.RecordBatch.from_arrays([normalize_array(a) for a in batch.columns],
                                             names=batch.schema.names)
    except InputError:
        raise
    except Exception as exc:
        raise _fail(data.key, data.path, f"cannot read Parquet data ({_first_line(exc)})") \
            from None


def normalize_array(arr: pa.Array) -> pa.Array:
    """A typed column as float64 (numbers, booleans excluded) or trimmed strings (the rest)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out = pc.cast(arr, pa.float64())
        # NaN in a float column is a missing value, as in a CSV.
        return pc.if_else(pc.is_nan(out), pa.scalar(None, pa.float64()), out)
    if pa.types.is_boolean(t):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        out = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
        return pc.if_else(pc.is_in(out, pa.array(list(MISSING_TOKENS))),
                          pa.scalar(None, pa.string()), out)
    return pc.cast(arr, pa.string())
