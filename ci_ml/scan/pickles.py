"""Static analysis of pickle streams: which callables would a load import and call?

Nothing is ever unpickled. ``pickletools.genops`` decodes the opcode stream and a
small stack simulation resolves the operands of ``STACK_GLOBAL`` (protocol 4+
pushes the module and name as strings, often through the memo), so every
import a load would perform is known before any code could run.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import pickletools

_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
                         "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES",
                         "BINBYTES8"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_CALL_OPS = frozenset({"REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
_MARK = object()
UNRESOLVED = "?"

# Modules whose import alone from a pickle means arbitrary code, processes, files or network.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "runpy", "importlib", "pty",
    "commands", "webbrowser", "ctypes", "multiprocessing", "code", "codeop", "pickle", "_pickle",
    "cPickle", "dill", "marshal", "types", "asyncio", "urllib", "urllib2", "http", "httplib",
    "ftplib", "smtplib", "telnetlib", "requests", "httpx", "signal", "pdb", "bdb", "timeit",
    "threading", "_thread", "platform", "site", "zipimport", "pkgutil", "tempfile", "glob",
    "ssl", "select", "selectors", "mmap", "resource", "pip", "setuptools", "distutils",
})
DANGEROUS_BUILTINS = frozenset({
    "eval", "exec", "execfile", "compile", "open", "file", "__import__", "getattr", "setattr",
    "delattr", "globals", "locals", "vars", "breakpoint", "input", "raw_input", "apply",
    "reload", "memoryview", "help", "exit", "quit", "__loader__", "__build_class__",
})
# Callables that chain into arbitrary calls or nested loads: gadgets for an attacker.
GADGETS = frozenset({
    ("operator", "attrgetter"), ("operator", "methodcaller"), ("operator", "itemgetter"),
    ("operator", "getitem"), ("functools", "partial"), ("functools", "reduce"),
    ("torch.storage", "_load_from_bytes"), ("torch", "load"), ("torch.serialization", "load"),
    ("numpy", "load"), ("numpy.lib.npyio", "load"), ("joblib", "load"),
    ("builtins", "type"), ("__builtin__", "type"),
})
_SAFE_BUILTINS = frozenset({"set", "frozenset", "slice", "complex", "bytearray", "bytes", "range",
                            "dict", "list", "tuple", "int", "float", "bool", "str", "object"})
_TORCH_DTYPES = frozenset({
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "complex64", "complex128", "float", "double", "half", "long", "int", "short",
    "Size", "device", "dtype", "memory_format", "contiguous_format", "channels_last", "strided",
})
# What torch.save, numpy and joblib write for plain tensors, arrays and containers.
SAFE_GLOBALS = frozenset({
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"), ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"), ("torch", "Tensor"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("joblib.numpy_pickle", "NumpyArrayWrapper"),
})


class Verdict(enum.Enum):
    SAFE = "safe"            # allowlisted: tensors, arrays, containers
    UNKNOWN = "unknown"      # not allowlisted: loading runs that module's code
    GADGET = "gadget"        # chains into arbitrary calls or nested loads
    DANGEROUS = "dangerous"  # executes commands, code, files or network on load


def classify(module: str, name: str) -> Verdict:
    if module == UNRESOLVED or name == UNRESOLVED:
        return Verdict.GADGET  # operands computed at load time: hiding the import is the point
    root = module.split(".")[0]
    if module in ("builtins", "__builtin__"):
        if name in DANGEROUS_BUILTINS:
            return Verdict.DANGEROUS
        if name in _SAFE_BUILTINS:
            return Verdict.SAFE
    if root in DANGEROUS_MODULES:
        return Verdict.DANGEROUS
    if (module, name) in GADGETS or (root, name) in GADGETS:
        return Verdict.GADGET
    if (module, name) in SAFE_GLOBALS:
        return Verdict.SAFE
    if module == "torch" and (name in _TORCH_DTYPES or name.endswith("Storage")):
        return Verdict.SAFE
    if module == "numpy" and name.startswith(("float", "int", "uint", "complex", "bool")):
        return Verdict.SAFE
    return Verdict.UNKNOWN


@dataclass(frozen=True)
class PickleImport:
    module: str
    name: str
    offset: int
    opcode: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def verdict(self) -> Verdict:
        return classify(self.module, self.name)


@dataclass(frozen=True)
class PickleReport:
    imports: tuple[PickleImport, ...]
    calls: int                    # REDUCE/INST/OBJ/NEWOBJ/BUILD opcodes: what a load would call
    protocol: int | None
    opcodes: int
    error: str | None = None      # where and why decoding stopped; the rest is unverified
    error_offset: int | None = None


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None


def analyze_pickle(source: bytes | BinaryIO) -> PickleReport:
    """Every import and call a load of ``data`` would perform, without loading it.

    Consecutive pickles (legacy ``torch.save`` writes several) are all read; raw
    bytes after the last one (tensor data) end the scan. A malformed stream, or
    non-pickle bytes in the middle of one, is reported with its offset.
    """
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    imports: list[PickleImport] = []
    calls = opcodes = 0
    protocol: int | None = None
    start = stream.tell()
    while True:
        report, end = _analyze_one(stream, start)
        imports += report.imports
        calls += report.calls
        opcodes += report.opcodes
        protocol = protocol if protocol is not None else report.protocol
        if report.error is not None or end is None:
            return PickleReport(tuple(imports), calls, protocol, opcodes, report.error,
                                report.error_offset)
        start = end
        stream.seek(start)
        if not looks_like_pickle(stream.read(2)):
            return PickleReport(tuple(imports), calls, protocol, opcodes)


def _analyze_one(stream: BinaryIO, start: int) -> tuple[PickleReport, int | None]:
    import pickletools  # its opcode tables are sizable: load them only to read a pickle

    stack: list[object] = []
    memo: dict[int, object] = {}
    imports: list[PickleImport] = []
    calls = opcodes = 0
    protocol: int | None = None
    stream.seek(start)
    try:
        for op, arg, pos in pickletools.genops(stream):
            opcodes += 1
            name = op.name
            if name == "PROTO":
                protocol = int(arg or 0)
            elif name in _STRING_OPS:
                stack.append(_text(arg))
            elif name in _GET_OPS:
                stack.append(memo.get(int(arg or 0)))
            elif name in _PUT_OPS:
                memo[int(arg or 0)] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name == "DUP":
                stack.append(stack[-1] if stack else None)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                imports.append(PickleImport(module, attr, pos or 0, name))
                if name == "INST":
                    calls += 1
                    _pop_to_mark(stack)
                stack.append(None)
            elif name == "STACK_GLOBAL":
                attr_v = stack.pop() if stack else None
                module_v = stack.pop() if stack else None
                imports.append(PickleImport(module_v if isinstance(module_v, str) else UNRESOLVED,
                                            attr_v if isinstance(attr_v, str) else UNRESOLVED,
                                            pos or 0, name))
                stack.append(None)
            elif name in _EXT_OPS:
                imports.append(PickleImport("copyreg", f"extension {arg}", pos or 0, name))
                stack.append(None)
            else:
                if name in _CALL_OPS:
                    calls += 1
                _simulate(op, stack)
            if name == "STOP":
                return PickleReport(tuple(imports), calls, protocol, opcodes), (pos or 0) + 1
    except (ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        message = str(exc) or type(exc).__name__
        return PickleReport(tuple(imports), calls, protocol, opcodes, message,
                            _error_offset(message)), None
    return PickleReport(tuple(imports), calls, protocol, opcodes,
                        "stream ended without a STOP opcode", stream.tell()), None


def _pop_to_mark(stack: list[object]) -> None:
    while stack:
        if stack.pop() is _MARK:
            return


def _simulate(op: pickletools.OpcodeInfo, stack: list[object]) -> None:
    import pickletools

    before = op.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        for _ in range(before.index(pickletools.markobject)):
            if stack:
                stack.pop()
    else:
        for _ in range(len(before)):
            if stack:
                stack.pop()
    for item in op.stack_after:
        stack.append(_MARK if item is pickletools.markobject else None)


def _error_offset(message: str) -> int | None:
    # genops says e.g. "at position 227, opcode b'\x0c' unknown"
    marker = "at position "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return None


def looks_like_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO (0x80) and a protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
