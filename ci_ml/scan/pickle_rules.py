"""What a global imported by a pickle really reaches, and how dangerous that is.

A pickle names callables as ``module`` + ``name``; the unpickler imports the module
and walks the (possibly dotted) name attribute by attribute, after mapping Python 2
names (``__builtin__``, ``copy_reg``...) to Python 3 ones. So ``linecache`` +
``os.system`` is ``os.system`` (linecache imports os), and ``sklearn.utils`` + ``sys``
is the ``sys`` module. ``resolve`` lists every module/attribute split a name can
reach; ``rate`` gives the worst of them:

- ``SAFE``: on the allow-list of known-safe constructors (tensor and array rebuilders,
  plain containers, dates); nothing else is safe;
- ``DANGEROUS``: runs commands or code, touches files, processes or the network, or
  loads another pickle (including helpers that execute strings, like numpy.testing's
  ``runstring`` or cProfile's ``run``);
- ``GADGET``: chains into arbitrary calls (``operator.attrgetter``, ``functools.partial``,
  ``builtins.type``, ``copyreg.add_extension``, dunder attributes);
- ``UNKNOWN``: anything else: rated by how the pickle uses it (see ``pickles.py``).
"""

from __future__ import annotations

import enum
from functools import cache

from ci_ml.scan.pickle_allowlist import SAFE_GLOBALS


class Kind(enum.IntEnum):
    SAFE = 0
    UNKNOWN = 1
    GADGET = 2
    DANGEROUS = 3


UNRESOLVED = "?"

# Modules (and their submodules) whose members run commands or code, or reach files,
# processes, the network, native code or another deserializer. Names are compared after
# stripping leading underscores, so ``_posixsubprocess``, ``_socket``, ``_pickle``, ``_io``
# and ``_thread`` are covered by their public twins.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "posixsubprocess", "sys",
    "socket", "shutil", "runpy", "importlib", "imp", "pty", "commands", "webbrowser", "ctypes",
    "cffi", "multiprocessing", "concurrent", "code", "codeop", "pickle", "cPickle", "dill",
    "cloudpickle", "marshal", "shelve", "dbm", "sqlite3", "types", "asyncio", "urllib",
    "urllib2", "urllib3", "http", "httplib", "ftplib", "smtplib", "telnetlib", "poplib",
    "imaplib", "nntplib", "xmlrpc", "socketserver", "wsgiref", "requests", "httpx", "aiohttp",
    "ssl", "select", "selectors", "mmap", "resource", "signal", "pdb", "bdb", "timeit",
    "profile", "cProfile", "trace", "doctest", "threading", "thread", "platform", "site",
    "zipimport", "pkgutil", "tempfile", "glob", "io", "fileinput", "pip", "setuptools",
    "distutils", "ensurepip", "venv", "idlelib", "pydoc", "winapi", "msvcrt", "winreg",
    "sysconfig", "gc", "zipfile", "tarfile", "atexit", "faulthandler",
})
# Members of otherwise harmless packages that execute strings, compile code, load other
# pickles or fetch from the network: (module prefix, name).
DANGEROUS_MEMBERS = frozenset({
    ("numpy.testing", "runstring"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
    ("numpy", "loadtxt"), ("numpy", "fromfile"), ("numpy", "save"), ("numpy", "savez"),
    ("numpy.ctypeslib", "load_library"), ("numpy.f2py", "*"), ("numpy.distutils", "*"),
    ("torch", "load"), ("torch.serialization", "load"), ("torch.hub", "*"),
    ("torch.jit", "load"), ("torch.package", "*"), ("torch.utils.cpp_extension", "*"),
    ("torch.ops", "load_library"), ("torch.classes", "load_library"), ("torch._dynamo", "*"),
    ("torch.utils.data.datapipes", "*"), ("torch.storage", "_load_from_bytes"),
    ("torch", "from_file"), ("torch", "save"),
    ("joblib", "load"), ("joblib.numpy_pickle", "load"), ("joblib", "dump"),
    ("pandas", "read_pickle"), ("pandas.io", "*"), ("pandas", "read_csv"),
    ("keras.models", "load_model"), ("tensorflow.io", "*"), ("tensorflow.keras.models", "*"),
    ("scipy.io", "*"), ("h5py", "*"), ("IPython", "*"), ("jinja2", "*"), ("mako", "*"),
    ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("builtins", "eval"), ("builtins", "exec"), ("builtins", "execfile"),
    ("builtins", "compile"), ("builtins", "open"), ("builtins", "file"),
    ("builtins", "__import__"), ("builtins", "getattr"), ("builtins", "setattr"),
    ("builtins", "delattr"), ("builtins", "globals"), ("builtins", "locals"),
    ("builtins", "vars"), ("builtins", "breakpoint"), ("builtins", "input"),
    ("builtins", "raw_input"), ("builtins", "apply"), ("builtins", "reload"),
    ("builtins", "help"), ("builtins", "exit"), ("builtins", "quit"),
    ("builtins", "__loader__"), ("builtins", "__build_class__"), ("builtins", "memoryview"),
    ("logging.config", "*"), ("linecache", "getline"), ("linecache", "getlines"),
    ("pathlib", "Path.write_text"), ("pathlib", "Path.write_bytes"),
})
# Callables that turn data into calls: the building blocks of a chained payload.
GADGETS = frozenset({
    ("operator", "*"), ("functools", "*"), ("itertools", "*"), ("copyreg", "add_extension"),
    ("copyreg", "*"), ("builtins", "type"), ("builtins", "super"), ("builtins", "classmethod"),
    ("builtins", "staticmethod"), ("builtins", "property"), ("builtins", "map"),
    ("builtins", "filter"), ("builtins", "zip"), ("builtins", "iter"), ("builtins", "next"),
    ("builtins", "callable"), ("builtins", "hasattr"), ("builtins", "isinstance"),
    ("builtins", "object.__reduce_ex__"), ("collections", "namedtuple"),
    ("abc", "*"), ("weakref", "*"), ("contextlib", "*"), ("string", "Formatter"),
    ("re", "*"), ("ast", "*"), ("dis", "*"), ("warnings", "*"), ("unittest", "*"),
    ("numpy", "frompyfunc"), ("numpy", "vectorize"), ("numpy", "piecewise"),
    ("numpy", "apply_along_axis"), ("numpy", "apply_over_axes"),
})
# Python 2 module names pickle maps to Python 3 ones (pickle's fix_imports).
_PY2 = {"__builtin__": "builtins", "copy_reg": "copyreg", "cPickle": "pickle",
        "exceptions": "builtins", "commands": "subprocess", "UserDict": "collections",
        "urllib2": "urllib.request", "httplib": "http.client", "Queue": "queue",
        "SocketServer": "socketserver", "thread": "_thread", "repr": "reprlib"}


def normalize(module: str) -> str:
    """Python 2 names as the unpickler maps them (it does so below protocol 3; any
    protocol is read that way here, to be safe)."""
    head, dot, rest = module.partition(".")
    return _PY2.get(head, head) + dot + rest


def _root(module: str) -> str:
    return module.split(".")[0].lstrip("_")


def _member_match(module: str, name: str, table: frozenset[tuple[str, str]]) -> bool:
    for prefix, member in table:
        if module == prefix or module.startswith(prefix + "."):
            if member == "*" or member == name or name.startswith(member + "."):
                return True
    return False


def resolve(module: str, name: str) -> list[tuple[str, str]]:
    """Every (module, attribute path) a global can reach: the name as given, and, for a
    dotted name, each module named inside it (``linecache`` + ``os.system`` -> ``os`` +
    ``system``: the unpickler walks the name attribute by attribute, and linecache has
    imported os). An empty attribute means the module object itself."""
    module = normalize(module)
    attrs = [p for p in name.split(".") if p]
    out = [(module, name)]
    for i in range(len(attrs)):
        for j in range(i + 1, len(attrs) + 1):
            out.append((".".join(attrs[i:j]), ".".join(attrs[j:])))
    return out


@cache
def rate(module: str, name: str) -> tuple[Kind, str]:
    """(how dangerous, what it reaches), the worst over everything the name can reach."""
    if module == UNRESOLVED or name == UNRESOLVED:
        return Kind.GADGET, "a name computed while loading (it cannot be checked)"
    module = normalize(module)
    if (module, name) in SAFE_GLOBALS:
        return Kind.SAFE, f"{module}.{name}"
    worst, reached = Kind.UNKNOWN, f"{module}.{name}"
    for mod, attr in resolve(module, name):
        kind = _rate_one(mod, attr)
        if kind > worst:
            worst, reached = kind, f"{mod}.{attr}" if attr else f"the {mod} module"
    if worst is Kind.UNKNOWN and any(p.startswith("__") and p.endswith("__")
                                     for p in name.split(".")):
        return Kind.GADGET, f"{module}.{name} (a dunder attribute)"
    return worst, reached


def _rate_one(module: str, attr: str) -> Kind:
    if _root(module) in DANGEROUS_MODULES:
        return Kind.DANGEROUS
    first = attr.split(".")[0] if attr else ""
    # C accelerators carry their module's members under a leading underscore (_operator).
    names = {module, module.lstrip("_")}
    if any(_member_match(m, first, DANGEROUS_MEMBERS) for m in names):
        return Kind.DANGEROUS
    if "builtins" in names and not attr:
        return Kind.DANGEROUS   # the builtins module itself: eval, exec, open...
    if any(_member_match(m, first, GADGETS) for m in names):
        return Kind.GADGET
    return Kind.UNKNOWN
