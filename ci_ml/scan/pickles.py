"""Static analysis of pickle streams: what would a load import, call and build?

Nothing is ever unpickled. ``pickletools.genops`` decodes the opcodes and a small
simulation of the unpickler's stack and memo follows the values: constants,
containers, imported globals (``Ref``), the results of calls (``Call``), objects
built without ``__init__`` (``Obj``) and persistent ids. So each import is known
with what the load does with it (referenced, instantiated, called, mutated), a call
on a value computed during the load (a reducer of a reducer) is seen, and the parts
of a file that are not pickle opcodes are skipped exactly where the format says so:
joblib's array bytes (sized from the wrapper's shape and dtype) and legacy
``torch.save`` storages (sized from the persistent ids). Several pickles in one file
are all read, of any protocol; bytes that do not decode are reported, and a raw
search for import opcodes covers whatever could not be decoded.
"""

from __future__ import annotations

import enum
import io
import re
import warnings
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from ci_ml.scan.interface import Severity
from ci_ml.scan.pickle_rules import UNRESOLVED, Kind, normalize, rate

if TYPE_CHECKING:
    import pickletools

MAX_TRACKED_ITEMS = 100_000       # container items followed; beyond, contents are opaque
MAX_TRACKED_TEXT = 1 << 16        # longer strings and bytes are kept as placeholders
MAX_NESTING = 8                   # joblib object arrays nest pickles; bounded
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_IMPORT_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"})
_CALL_OPS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})
_RECONSTRUCTORS = frozenset({("copyreg", "_reconstructor"), ("copyreg", "__newobj__"),
                             ("copyreg", "__newobj_ex__")})
_JOBLIB_WRAPPERS = frozenset({("joblib.numpy_pickle", "NumpyArrayWrapper"),
                              ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper")})
_STORAGE_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
                  "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8,
                  "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4, "QUInt4x2": 1,
                  "QUInt2x4": 1}


class Use(enum.Flag):
    NONE = 0
    REFERENCED = enum.auto()     # pushed as a value (an argument, a class for later)
    INSTANTIATED = enum.auto()   # created without __init__ (NEWOBJ, copyreg reconstructors)
    CALLED = enum.auto()         # called with arguments the pickle chose (REDUCE, INST, OBJ)
    MUTATED = enum.auto()        # its attributes set by BUILD (a module or class patched)


@dataclass(frozen=True)
class PickleImport:
    module: str
    name: str
    offset: int
    opcode: str
    uses: Use = Use.NONE
    kind: Kind = Kind.UNKNOWN
    reaches: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def severity(self) -> Severity | None:
        """None for an allow-listed constructor used as one; else how bad this import is."""
        if self.kind is Kind.DANGEROUS:
            return Severity.CRITICAL
        if self.kind is Kind.GADGET or Use.MUTATED in self.uses:
            return Severity.HIGH
        if self.kind is Kind.SAFE:
            return None
        return Severity.HIGH if Use.CALLED in self.uses else Severity.MEDIUM

    @property
    def use(self) -> str:
        for flag, word in ((Use.MUTATED, "patched"), (Use.CALLED, "called"),
                           (Use.INSTANTIATED, "instantiated")):
            if flag in self.uses:
                return word
        return "referenced"


@dataclass(frozen=True)
class PickleReport:
    imports: tuple[PickleImport, ...]
    calls: int                    # REDUCE/INST/OBJ/NEWOBJ opcodes: what a load would call
    protocol: int | None
    opcodes: int
    error: str | None = None      # where and why decoding stopped; the rest is unverified
    error_offset: int | None = None
    computed_calls: tuple[int, ...] = ()    # offsets of calls on values made during the load
    pickles: int = 1
    skipped: tuple[str, ...] = ()           # non-pickle regions skipped exactly, and why
    joblib_arrays: bool = False             # the error follows a joblib array of unknown size
    trailing: bool = False                  # the error is bytes after the last pickle
    raw_imports: tuple[PickleImport, ...] = ()   # import opcodes found in undecoded bytes
    end: int | None = None


class _Imp:
    __slots__ = ("module", "name", "offset", "opcode", "uses")

    def __init__(self, module: str, name: str, offset: int, opcode: str) -> None:
        self.module, self.name, self.offset, self.opcode = module, name, offset, opcode
        self.uses = Use.NONE


class Ref:
    """A global the pickle imports."""

    __slots__ = ("imp",)

    def __init__(self, imp: _Imp) -> None:
        self.imp = imp

    @property
    def key(self) -> tuple[str, str]:
        return normalize(self.imp.module), self.imp.name


class Call:
    """What calling ``func`` with ``args`` returned (or will, at load time)."""

    __slots__ = ("func", "args", "state")

    def __init__(self, func: Any, args: Any) -> None:
        self.func, self.args, self.state = func, args, None


class Obj:
    """An instance created without ``__init__`` (NEWOBJ, copyreg reconstructors)."""

    __slots__ = ("cls", "args", "state")

    def __init__(self, cls: Any, args: Any) -> None:
        self.cls, self.args, self.state = cls, args, None


class Pid:
    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()
_MARK = object()


class DecodeError(Exception):
    def __init__(self, message: str, offset: int | None, truncated: bool = False) -> None:
        super().__init__(message)
        self.message, self.offset, self.truncated = message, offset, truncated


class _Run:
    """State of one ``analyze_pickle`` call (possibly several pickles and nested ones)."""

    def __init__(self) -> None:
        self.imports: list[_Imp] = []
        self.calls = 0
        self.opcodes = 0
        self.computed: list[int] = []
        self.extensions: dict[int, tuple[str, str]] = {}
        self.skipped: list[str] = []
        self.pids: list[Any] = []


def _text(value: object) -> Any:
    if isinstance(value, str | bytes | bytearray):
        if len(value) > MAX_TRACKED_TEXT:
            return OPAQUE
        return bytes(value) if isinstance(value, bytearray) else value
    return value


def _ref_key(value: Any) -> tuple[str, str] | None:
    return value.key if isinstance(value, Ref) else None


class _Simulator:
    """One pickle, from PROTO (or its first opcode) to STOP."""

    def __init__(self, run: _Run, stream: IO[bytes], depth: int, strict: bool = False) -> None:
        self.run, self.stream, self.depth = run, stream, depth
        self.strict = strict   # fail where pickle.load fails: empty stack, unknown memo key
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.protocol: int | None = None

    # -- helpers -------------------------------------------------------------------------
    def pop(self) -> Any:
        if self.stack:
            return self.stack.pop()
        if self.strict:
            raise DecodeError("stack underflow", None)
        return OPAQUE

    def pop_mark(self) -> list[Any]:
        items: list[Any] = []
        while self.stack:
            item = self.stack.pop()
            if item is _MARK:
                items.reverse()
                return items
            items.append(item)
        raise DecodeError("MARK missing: the stream is malformed", None)

    def top(self) -> Any:
        if self.stack:
            return self.stack[-1]
        if self.strict:
            raise DecodeError("stack underflow", None)
        return OPAQUE

    def use(self, value: Any, how: Use) -> None:
        if isinstance(value, Ref):
            value.imp.uses |= how

    def add_import(self, module: str, name: str, pos: int, opcode: str) -> Ref:
        imp = _Imp(module, name, pos, opcode)
        imp.uses |= Use.REFERENCED
        self.run.imports.append(imp)
        return Ref(imp)

    def call(self, func: Any, args: Any, pos: int) -> Any:
        """REDUCE: func(*args). What it calls, and what calls it makes through helpers."""
        self.run.calls += 1
        if not isinstance(func, Ref):
            self.run.computed.append(pos)   # a reducer of a reducer: calling a computed value
            return Call(func, args)
        key = func.key
        items = list(args) if isinstance(args, tuple | list) else []
        if _generated_reconstructor(key):
            # Cython's __pyx_unpickle_<Class>(type, checksum, state) and scikit-learn's
            # newObj(type) only create an instance of the type they are given.
            func.imp.uses |= Use.INSTANTIATED
            if items:
                self.use(items[0], Use.INSTANTIATED)
            return Obj(items[0] if items else OPAQUE, tuple(items[1:]))
        func.imp.uses |= Use.CALLED
        if key in _RECONSTRUCTORS and items:
            # _reconstructor(cls, base, state): base.__new__(cls) and base.__init__ run;
            # __newobj__(cls, *args): cls.__new__(cls, *args). The class is instantiated.
            self.use(items[0], Use.INSTANTIATED)
            if key == ("copyreg", "_reconstructor") and len(items) > 1:
                base = items[1]
                if _ref_key(base) not in (("builtins", "object"), None):
                    self.use(base, Use.CALLED)
                elif not isinstance(base, Ref):
                    self.run.computed.append(pos)
            return Obj(items[0], tuple(items[1:]))
        if key == ("copyreg", "add_extension") and len(items) == 3:
            module, name, code = items
            if isinstance(module, str) and isinstance(name, str) and isinstance(code, int):
                self.run.extensions[code] = (module, name)
        return Call(func, args)

    # -- the opcode loop -----------------------------------------------------------------
    def run_to_stop(self, start: int) -> tuple[Any, int]:
        """Simulate from ``start``; (the value STOP returns, the offset after STOP)."""
        import pickletools  # its opcode tables are sizable: load them only to read a pickle

        stream = self.stream
        stream.seek(start)
        ops = pickletools.genops(stream)
        with warnings.catch_warnings():
            # A protocol 0 STRING with odd escapes makes the decoder warn; the bytes are
            # hostile by assumption, and a warning per opcode is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._loop(ops, stream)

    def _loop(self, ops: Any, stream: IO[bytes]) -> tuple[Any, int]:
        try:
            for op, arg, pos in ops:
                self.run.opcodes += 1
                pos = pos or 0
                if self.step(op, arg, pos):
                    return self.top(), stream.tell()
                if op.name == "BUILD" and self.joblib_array(pos):
                    # The array's bytes were skipped: genops reads on from the new position.
                    continue
        except DecodeError:
            raise
        except (ValueError, EOFError, IndexError, KeyError, TypeError, OverflowError) as exc:
            message = str(exc) or type(exc).__name__
            ran_out = any(w in message for w in ("exhausted", "but only", "no newline"))
            raise DecodeError(message, _error_offset(message), ran_out) from exc
        raise DecodeError("stream ended without a STOP opcode", stream.tell())

    def step(self, op: pickletools.OpcodeInfo, arg: Any, pos: int) -> bool:
        name = op.name
        push = self.stack.append
        if name == "STOP":
            return True
        if name == "PROTO":
            self.protocol = int(arg or 0)
        elif name == "FRAME":
            pass
        elif arg is not None and op.stack_before == [] and len(op.stack_after) == 1 and (
                name not in _IMPORT_OPS and name not in ("GET", "BINGET", "LONG_BINGET",
                                                          "PERSID")):
            push(_text(arg))                       # every constant: ints, floats, strings
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            push({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name == "EMPTY_LIST":
            push([])
        elif name in ("EMPTY_DICT",):
            push({})
        elif name == "EMPTY_TUPLE":
            push(())
        elif name == "EMPTY_SET":
            push([])
        elif name == "MARK":
            push(_MARK)
        elif name in ("LIST", "TUPLE", "FROZENSET"):
            items = self.pop_mark()[:MAX_TRACKED_ITEMS]
            push(items if name == "LIST" else tuple(items))
        elif name == "DICT":
            push(_pairs(self.pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self.pop() for _ in range(n)]
            push(tuple(reversed(items)))
        elif name == "APPEND":
            value = self.pop()
            target = self.top()
            if isinstance(target, list) and len(target) < MAX_TRACKED_ITEMS:
                target.append(value)
        elif name in ("APPENDS", "ADDITEMS"):
            items = self.pop_mark()
            target = self.top()
            if isinstance(target, list):
                target.extend(items[:max(0, MAX_TRACKED_ITEMS - len(target))])
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            _setitem(self.top(), key, value)
        elif name == "SETITEMS":
            target_items = self.pop_mark()
            target = self.top()
            for k, v in _pairs(target_items).items():
                _setitem(target, k, v)
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            push(self.top())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if self.strict and int(arg) not in self.memo:
                raise DecodeError(f"memo key {arg} was never set", pos)
            push(self.memo.get(int(arg), OPAQUE))
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            ref = self.add_import(module, attr, pos, name)
            if name == "INST":
                args = tuple(self.pop_mark())
                self.run.calls += 1
                ref.imp.uses |= Use.CALLED
                push(Call(ref, args))
            else:
                push(ref)
        elif name == "STACK_GLOBAL":
            attr_v, module_v = self.pop(), self.pop()
            push(self.add_import(module_v if isinstance(module_v, str) else UNRESOLVED,
                                 attr_v if isinstance(attr_v, str) else UNRESOLVED, pos, name))
        elif name in ("EXT1", "EXT2", "EXT4"):
            if self.strict and int(arg) not in self.run.extensions:
                # pickle.load fails on a code nothing registered (copyreg's registry starts
                # empty): bytes that only decode as one are not a pickle that acts.
                raise DecodeError(f"extension code {arg} is not registered", pos)
            module, attr = self.run.extensions.get(int(arg), ("copyreg", f"extension {arg}"))
            push(self.add_import(module, attr, pos, name))
        elif name == "REDUCE":
            args, func = self.pop(), self.pop()
            push(self.call(func, args, pos))
        elif name == "OBJ":
            items = self.pop_mark()
            cls = items[0] if items else OPAQUE
            self.run.calls += 1
            self.use(cls, Use.CALLED)
            if not isinstance(cls, Ref):
                self.run.computed.append(pos)
            push(Call(cls, tuple(items[1:])))
        elif name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                self.pop()   # kwargs
            args, cls = self.pop(), self.pop()
            self.run.calls += 1
            self.use(cls, Use.INSTANTIATED)
            if not isinstance(cls, Ref):
                self.run.computed.append(pos)
            push(Obj(cls, args))
        elif name == "BUILD":
            state = self.pop()
            target = self.top()
            if isinstance(target, Ref):
                target.imp.uses |= Use.MUTATED      # sets attributes on a module or class
            elif isinstance(target, Obj | Call):
                target.state = state
        elif name in ("PERSID", "BINPERSID"):
            pid = arg if name == "PERSID" else self.pop()
            self.run.pids.append(pid)
            push(Pid(pid))
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            if name == "NEXT_BUFFER":
                push(OPAQUE)
        else:
            # Anything else the tables know: keep the stack's shape right.
            _shape(op, self.stack)
        return False

    # -- joblib ----------------------------------------------------------------------------
    def joblib_array(self, pos: int) -> bool:
        """After BUILD of a joblib NumpyArrayWrapper, joblib reads the array from the file
        right there: skip exactly its bytes (or read the nested pickle of an object array)."""
        target = self.top()
        if not (isinstance(target, Obj) and _ref_key(target.cls) in _JOBLIB_WRAPPERS):
            return False
        state: dict[Any, Any] = target.state if isinstance(target.state, dict) else {}
        layout = _array_layout(state)
        if layout is None:
            raise DecodeError("joblib array data of a size ci-ml cannot determine follows "
                              "(its dtype or shape is not plain)", pos)
        count, itemsize, has_object = layout
        stream = self.stream
        self.stack[-1] = OPAQUE   # joblib swaps the wrapper for the array it reads
        if has_object:
            if self.depth >= MAX_NESTING:
                raise DecodeError("joblib object arrays nested too deeply", pos)
            nested = _Simulator(self.run, stream, self.depth + 1)
            _, end = nested.run_to_stop(stream.tell())
            stream.seek(end)
            self.run.skipped.append("a joblib object array (a nested pickle, analyzed)")
            return True
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = stream.read(1)
            if len(padding) != 1:
                raise DecodeError("joblib array data is truncated", stream.tell())
            stream.seek(padding[0], io.SEEK_CUR)
        size = count * itemsize
        here = stream.tell()
        stream.seek(0, io.SEEK_END)
        if stream.tell() < here + size:
            raise DecodeError(f"joblib array of {size} bytes runs past the end of the data",
                              here)
        stream.seek(here + size)
        self.run.skipped.append(f"joblib array data ({size} bytes)")
        return True


def _generated_reconstructor(key: tuple[str, str]) -> bool:
    module, name = key
    return (name.startswith("__pyx_unpickle_") and "." not in name) or (
        name == "newObj" and module.startswith("sklearn."))


def _pairs(items: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for i in range(0, len(items) - 1, 2):
        _setitem(out, items[i], items[i + 1])
    return out


def _setitem(target: Any, key: Any, value: Any) -> None:
    if isinstance(target, dict) and len(target) < MAX_TRACKED_ITEMS:
        try:
            target[key] = value
        except TypeError:
            pass   # an unhashable key (a list): contents are not needed


def _shape(op: pickletools.OpcodeInfo, stack: list[Any]) -> None:
    import pickletools

    before = op.stack_before
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
    else:
        for _ in range(len(before)):
            if stack:
                stack.pop()
    for item in op.stack_after:
        stack.append(_MARK if item is pickletools.markobject else OPAQUE)


_DESCR = re.compile(r"^[<>|=]?([biufcSUVOmM])(\d*)(\[\w+\])?$")
_KIND_BYTES = {"b": 1, "O": 8, "m": 8, "M": 8}


def _dtype_layout(dtype: Any, depth: int = 0) -> tuple[int, bool] | None:
    """(itemsize, holds objects) of a pickled numpy.dtype: numpy.dtype(descr, False, True)
    then BUILD (version, byteorder, subdescr, names, fields, elsize, alignment, flags)."""
    if not isinstance(dtype, Call) or _ref_key(dtype.func) != ("numpy", "dtype"):
        return None
    args = dtype.args if isinstance(dtype.args, tuple) else ()
    descr = args[0] if args else None
    if not isinstance(descr, str):
        return None
    match = _DESCR.match(descr)
    if match is None:
        return None
    kind, digits = match.group(1), match.group(2)
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    elsize = state[5] if len(state) > 5 and isinstance(state[5], int) else -1
    fields = state[4] if len(state) > 4 else None
    if fields is not None:
        # A structured dtype (scikit-learn's tree nodes): {name: (dtype, offset[, title])}
        # with the record size in elsize; it holds objects if any field does.
        if not isinstance(fields, dict) or elsize <= 0 or depth > 8:
            return None
        has_object = False
        for spec in fields.values():
            sub = _dtype_layout(spec[0], depth + 1) if isinstance(spec, tuple) and spec else None
            if sub is None:
                return None
            has_object = has_object or sub[1]
        return elsize, has_object
    if kind == "O":
        return 8, True
    if elsize > 0:
        return elsize, False
    if kind in _KIND_BYTES:
        return _KIND_BYTES[kind], False
    if not digits:
        return None
    size = int(digits)
    return (size * 4 if kind == "U" else size), False


def _array_layout(state: dict[Any, Any]) -> tuple[int, int, bool] | None:
    shape, dtype = state.get("shape"), state.get("dtype")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    layout = _dtype_layout(dtype)
    if layout is None:
        return None
    count = 1
    for dim in shape:
        count *= dim
    return count, layout[0], layout[1]


def _error_offset(message: str) -> int | None:
    # genops says e.g. "at position 227, opcode b'\x0c' unknown"
    marker = "at position "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return None


# -- recognizing a pickle ---------------------------------------------------------------------

def looks_like_pickle(head: bytes, truncated: bool = True) -> bool:
    """Could ``head`` (the first bytes of something) be read by ``pickle.load``, far enough to
    import or call? Protocol 2+ starts with PROTO; protocol 0 and 1 have no header, so the
    opcodes are run on the stack model, failing where pickle.load fails (an empty stack, a
    memo key never set): bytes that reach STOP, or import something before they fail (a load
    would run that import first), are a pickle. Text and raw numbers fail at once."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    run = _Run()
    try:
        _Simulator(run, io.BytesIO(head), 0, strict=True).run_to_stop(0)
    except DecodeError as exc:
        return bool(run.imports) or (truncated and exc.truncated and run.opcodes >= 8)
    return run.opcodes >= 2


# -- the driver: consecutive pickles, legacy torch storages, undecoded bytes -----------------

def analyze_pickle(source: bytes | IO[bytes], size: int | None = None) -> PickleReport:
    """Every import and call a load of ``source`` would perform, without loading it.

    Consecutive pickles (legacy ``torch.save`` writes five, then the storages) are all
    read; a legacy torch file's storages are skipped by the sizes its persistent ids
    declare; anything after that which is a pickle is read too. A stream that does not
    decode is reported with its offset, and the undecoded rest is searched for imports.
    """
    stream: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    start = stream.tell()
    if size is None:
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
    run = _Run()
    results: list[Any] = []
    ends: list[int] = []
    protocol: int | None = None
    pos, error, error_offset, joblib_pending, trailing = start, None, None, False, False
    while pos < size:
        if results:
            stream.seek(pos)
            if not looks_like_pickle(stream.read(4096), truncated=size - pos > 4096):
                pos = _after_legacy_storages(stream, results, ends, run, size) or pos
                if pos >= size:
                    break
                stream.seek(pos)
                if not looks_like_pickle(stream.read(4096), truncated=size - pos > 4096):
                    error = f"{size - pos} bytes after the last pickle are not pickle data"
                    error_offset, trailing = pos, True
                    break
        sim = _Simulator(run, stream, 0)
        try:
            value, end = sim.run_to_stop(pos)
        except DecodeError as exc:
            error, error_offset = exc.message, exc.offset
            joblib_pending = "joblib array" in exc.message
            break
        protocol = protocol if protocol is not None else sim.protocol
        results.append(value)
        ends.append(end)
        pos = end
    raw: tuple[PickleImport, ...] = ()
    if error is not None:
        stream.seek(error_offset if error_offset is not None else pos)
        raw = tuple(raw_imports(stream.read(), error_offset or pos))
    return PickleReport(
        imports=tuple(_finish(i) for i in run.imports), calls=run.calls, protocol=protocol,
        opcodes=run.opcodes, error=error, error_offset=error_offset,
        computed_calls=tuple(run.computed), pickles=len(results), skipped=tuple(run.skipped),
        joblib_arrays=joblib_pending, trailing=trailing, raw_imports=raw,
        end=ends[-1] if ends else None)


def _finish(imp: _Imp) -> PickleImport:
    kind, reaches = rate(imp.module, imp.name)
    return PickleImport(imp.module, imp.name, imp.offset, imp.opcode, imp.uses, kind, reaches)


def _after_legacy_storages(stream: IO[bytes], results: list[Any], ends: list[int], run: _Run,
                           size: int) -> int | None:
    """Legacy torch.save: magic, protocol, sys_info, the object (its storages as persistent
    ids), the storage keys; then each storage as an int64 element count and its bytes. The
    offset after the last storage, or None if this is not such a file (or does not add up)."""
    if len(results) < 5 or results[0] != TORCH_MAGIC or not isinstance(results[4], list):
        return None
    sizes: dict[str, int] = {}
    for pid in run.pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            return None
        key, numel, elsize = pid[2], pid[4], _storage_bytes(pid[1])
        if not isinstance(key, str) or not isinstance(numel, int) or elsize is None:
            return None
        sizes[key] = numel * elsize
    pos = ends[4]
    for key in results[4]:
        if key not in sizes:
            return None
        stream.seek(pos)
        header = stream.read(8)
        if len(header) != 8:
            return None
        pos += 8 + sizes[key]
        if pos > size:
            return None
    run.skipped.append(f"{len(results[4])} legacy torch storage(s)")
    return pos


def _storage_bytes(storage: Any) -> int | None:
    key = _ref_key(storage)
    if key is None or key[0] != "torch" or not key[1].endswith("Storage"):
        return None
    return _STORAGE_BYTES.get(key[1].removesuffix("Storage"))


_RAW_GLOBAL = re.compile(rb"c([A-Za-z_][\w.]{0,200})\n([A-Za-z_][\w.]{0,200})\n")
_RAW_STACK_GLOBAL = re.compile(
    rb"[\x8cX]([\x01-\xff])(?:\x00\x00\x00)?([A-Za-z_][\w.]{0,200})(?:\x94|q.)?"
    rb"[\x8cX]([\x01-\xff])(?:\x00\x00\x00)?([A-Za-z_][\w.]{0,200})(?:\x94|q.)?\x93", re.S)


def raw_imports(data: bytes, base: int = 0) -> list[PickleImport]:
    """Import opcodes anywhere in bytes that did not decode: a pessimistic net for what a
    different reader of the same file might still load."""
    found: list[PickleImport] = []
    for m in _RAW_GLOBAL.finditer(data):
        found.append(_finish(_raw(m.group(1), m.group(2), base + m.start(), "GLOBAL")))
    for m in _RAW_STACK_GLOBAL.finditer(data):
        if m.group(1)[0] == len(m.group(2)) and m.group(3)[0] == len(m.group(4)):
            found.append(_finish(_raw(m.group(2), m.group(4), base + m.start(), "STACK_GLOBAL")))
    return found


def _raw(module: bytes, name: bytes, offset: int, opcode: str) -> _Imp:
    imp = _Imp(module.decode("ascii", "replace"), name.decode("ascii", "replace"), offset,
               opcode)
    imp.uses = Use.CALLED   # unknown use: assume the worst
    return imp
