"""A corpus of malicious and benign model files, built on demand (no binary blobs committed).

Each malicious file, if it were ever loaded the way its format is loaded (pickle.load,
torch.load(weights_only=False), joblib.load, np.load(allow_pickle=True)), would run
``touch <marker>``: tests check the marker never appears. Each entry names the class of
bypass it covers (issue 14): protocols and names, several pickles in one file, numpy
object arrays, compressed containers, dotted globals, string-executing helpers, copyreg
nesting, reducers of reducers, files that cannot be read whole. The benign files are
what real projects save: torch state dicts and modules, numpy arrays, scikit-learn
models through joblib (plain and compressed), plain pickles of every protocol.

``build(directory, marker)`` writes them and returns the entries;
``scripts/model_scan_table.py`` runs ci-ml, picklescan and modelscan on the same corpus.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str          # file name in the corpus directory
    malicious: bool
    covers: str        # the class of bypass (or of benign file) it stands for


class Payload:
    """An object whose unpickling runs ``os.system(command)``; pickling it runs nothing."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (self.command,)


def _text(s: str, op: bytes = b"\x8c") -> bytes:
    raw = s.encode()
    return op + bytes([len(raw)]) + raw if op == b"\x8c" else op + struct.pack("<I", len(raw)) + raw


def _proto0(module: str, name: str, arg: str) -> bytes:
    """Protocol 0: no header; GLOBAL, a STRING argument, TUPLE, REDUCE."""
    return f"c{module}\n{name}\n(S'{arg}'\ntR.".encode()


def _proto1(module: str, name: str, arg: str) -> bytes:
    raw = arg.encode()
    return (f"c{module}\n{name}\n".encode() + b"(U" + bytes([len(raw)]) + raw + b"tR.")


def _stack_global(module: str, name: str, arg: str, proto: int = 4) -> bytes:
    """Protocol 4+: STACK_GLOBAL whose operands go through the memo."""
    return (b"\x80" + bytes([proto]) + _text(module) + b"\x94" + _text(name) + b"\x94"
            + b"\x93\x94" + _text(arg) + b"\x85R.")


def _legacy_torch(second: bytes | None = None, tail: bytes = b"") -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(OrderedDict(w=torch.zeros(2, 3)), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if second is not None:
        # After the magic-number pickle torch.load reads the next one (the "protocol
        # version"): a payload placed there runs on load.
        first_end = _first_pickle_end(data)
        data = data[:first_end] + second + data[first_end:]
    return data + tail


def _first_pickle_end(data: bytes) -> int:
    import pickletools

    stream = io.BytesIO(data)
    for op, _, pos in pickletools.genops(stream):
        if op.name == "STOP":
            return (pos or 0) + 1
    raise ValueError("no STOP")


def _torch_zip(replace_pkl: bytes | None = None) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    if replace_pkl is None:
        return buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = replace_pkl
            dst.writestr(info, data)
    return out.getvalue()


def _npy(obj: object) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([obj, 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _npz(**arrays: object) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **{k: np.array([v, 1], dtype=object) if not isinstance(v, np.ndarray)
                     else v for k, v in arrays.items()})
    return buf.getvalue()


def _joblib(obj: object, compress: object = 0) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=compress)
    return buf.getvalue()


def _zip_with(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def _encrypted_zip(name: str, data: bytes) -> bytes:
    """A zip whose member is flagged encrypted (general purpose bit 0), as a ZipCrypto
    archive is: its content cannot be read without the password."""
    raw = bytearray(_zip_with(name, data, zipfile.ZIP_STORED))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(sig)
        raw[at + flag_at] |= 0x01
    return bytes(raw)


def _bad_crc_zip(name: str, data: bytes) -> bytes:
    raw = bytearray(_zip_with(name, data, zipfile.ZIP_STORED))
    at = raw.find(data[-8:])
    raw[at] ^= 0xFF      # the member's bytes change; its recorded CRC-32 does not
    return bytes(raw)


def _declared_bomb() -> bytes:
    """A zip whose deflated member declares 64 GiB uncompressed: refused before reading."""
    raw = bytearray(_zip_with("data.pkl", pickle.dumps({"a": 1})))
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 0xFFFFFFF0)
    return bytes(raw)


def _gzip_bomb(megabytes: int) -> bytes:
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    parts = [comp.compress(pickle.dumps(b"", protocol=2)[:-1])]
    parts += [comp.compress(zeros) for _ in range(megabytes)]
    return b"".join(parts) + comp.flush()


def _sklearn_models() -> dict[str, object]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = load_iris(return_X_y=True)
    models: dict[str, object] = {
        "logreg": LogisticRegression(max_iter=500), "forest": RandomForestClassifier(5),
        "boosting": GradientBoostingClassifier(n_estimators=5), "knn": KNeighborsClassifier(),
        "pipeline": make_pipeline(StandardScaler(), SVC())}
    for model in models.values():
        model.fit(x, y)   # type: ignore[attr-defined]
    return models


def build(directory: Path, marker: Path, bomb_mb: int = 64) -> list[Entry]:
    """Write the corpus into ``directory``; ``bomb_mb`` sizes the gzip bomb (scan it with a
    smaller scan.model.max_unpacked_mb)."""
    import numpy as np
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    cmd = f"touch {marker}"
    evil = pickle.dumps(Payload(cmd), protocol=2)
    files: list[tuple[str, bytes, bool, str]] = [
        # -- malicious: every protocol, any file name
        ("p0-os-system.bin", _proto0("os", "system", cmd), True, "protocol 0, named .bin"),
        ("p1-posix-system.dat", _proto1("posix", "system", cmd), True, "protocol 1, named .dat"),
        ("p2-payload.weights", pickle.dumps(Payload(cmd), protocol=2), True,
         "protocol 2, named .weights"),
        ("p3-payload.model", pickle.dumps(Payload(cmd), protocol=3), True, "protocol 3"),
        ("p4-memo-stack-global.pkl", _stack_global("subprocess", "getoutput", cmd), True,
         "protocol 4, STACK_GLOBAL operands through the memo"),
        ("p5-payload.pickle", pickle.dumps(Payload(cmd), protocol=5), True, "protocol 5"),
        ("p0-acts-then-garbage.ckpt", _proto0("os", "system", cmd)[:-1] + b"\xff\xfe garbage",
         True, "protocol 0 that acts before bytes that do not decode"),
        # -- several pickles in one file
        ("legacy-second-pickle.pt", _legacy_torch(second=_proto0("os", "system", cmd)), True,
         "a second pickle after the first in a legacy torch file (protocol 0)"),
        ("legacy-trailing-pickle.pt", _legacy_torch(tail=evil), True,
         "a pickle after the last storage of a legacy torch file"),
        ("two-pickles.pkl", pickle.dumps([1, 2], protocol=2) + _proto1("os", "system", cmd), True,
         "a protocol 1 pickle after a protocol 2 one"),
        ("torch-zip-data-pkl.pth", _torch_zip(replace_pkl=_proto0("posix", "system", cmd)), True,
         "torch zip format with a malicious data.pkl"),
        # -- numpy object arrays
        ("object-array.npy", _npy(Payload(cmd)), True, "numpy .npy object array"),
        ("object-array.npz", _npz(w=np.arange(3.0), evil=Payload(cmd)), True,
         "numpy .npz with an object array member"),
        # -- compressed containers (joblib's formats, a gzip'd pickle)
        ("model.pkl.gz", _joblib({"w": np.arange(3.0), "evil": Payload(cmd)}, ("gzip", 3)), True,
         "gzip'd joblib named .pkl.gz"),
        ("model.joblib.bz2", _joblib(Payload(cmd), ("bz2", 3)), True, "bz2 joblib"),
        ("model.joblib.xz", _joblib(Payload(cmd), ("xz", 3)), True, "xz joblib"),
        ("model.joblib.lzma", _joblib(Payload(cmd), ("lzma", 3)), True, "lzma joblib"),
        ("model.z", _joblib(Payload(cmd), ("zlib", 3)), True, "zlib-compressed joblib"),
        ("after-array.joblib", _joblib({"w": np.arange(1000.0), "evil": Payload(cmd)}), True,
         "joblib payload after raw array bytes"),
        ("nested.tar", _tar({"inner/model.pkl": evil}), True, "a pickle inside a tar archive"),
        # -- what the globals really reach
        ("dotted-linecache.pkl", _stack_global("linecache", "os.system", cmd), True,
         "dotted name: linecache + os.system"),
        ("dotted-module-attr.pkl", _stack_global("torch.serialization", "os.system", cmd), True,
         "dotted name through a torch module"),
        ("numpy-runstring.pkl", _runstring(cmd), True,
         "numpy.testing runstring executes a string"),
        ("cprofile-run.pkl", _stack_global("cProfile", "run", f"__import__('os').system("
                                           f"{cmd!r})"), True, "cProfile.run executes a string"),
        ("copyreg-extension.pkl", _copyreg_extension(cmd), True,
         "copyreg nesting: add_extension, then EXT2 resolves to os.system"),
        ("copyreg-reconstructor.pkl", _copyreg_reconstructor(cmd), True,
         "copyreg._reconstructor whose base is a computed callable"),
        ("reducer-of-reducer.pkl", _reducer_of_reducer(cmd), True,
         "calling the result of a call (getattr of an imported module)"),
        ("alias-unknown-call.pkl", _proto0("mypkg.helpers", "run_cmd", cmd), True,
         "a callable outside the allow-list, called (an alias ci-ml cannot see through)"),
        ("builtins-py2-alias.pkl", _proto0("__builtin__", "eval", f"__import__('os').system("
                                           f"{cmd!r})"), True, "Python 2 name __builtin__.eval"),
        # -- files that cannot be read whole
        ("encrypted.zip", _encrypted_zip("data.pkl", evil), True, "an encrypted zip member"),
        ("model.pkl.zst", b"\x28\xb5\x2f\xfd" + os.urandom(64), True,
         "a compression ci-ml cannot open (zstd)"),
        ("bad-crc.pth", _bad_crc_zip("archive/data.pkl", evil + b"\x00" * 32), True,
         "a zip member with a bad CRC"),
        ("declared-bomb.npz", _declared_bomb(), True, "a zip member declaring 64 GiB"),
        ("gzip-bomb.pkl.gz", _gzip_bomb(bomb_mb), True, "a gzip stream expanding past the limit"),
        ("truncated.pkl.gz", gzip.compress(evil)[:-12], True, "a truncated gzip stream"),
        ("deep.pkl.gz", _nested_gzip(evil, 6), True, "gzip nested six levels deep"),
    ]
    # -- benign: what real projects save
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf)
    files.append(("state-dict.pt", buf.getvalue(), False, "torch state_dict (zip format)"))
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 2).state_dict(), buf, _use_new_zipfile_serialization=False)
    files.append(("state-dict-legacy.pt", buf.getvalue(), False, "torch state_dict (legacy)"))
    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), buf)
    files.append(("full-module.pt", buf.getvalue(), False, "a whole torch module"))
    buf = io.BytesIO()
    np.save(buf, np.arange(12.0).reshape(3, 4))
    files.append(("weights.npy", buf.getvalue(), False, "numpy float array"))
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(5), b=np.ones((2, 2)))
    files.append(("arrays.npz", buf.getvalue(), False, "numpy .npz, compressed"))
    files.append(("objects.npy", _npy("text"), False, "numpy object array of plain values"))
    models = _sklearn_models()
    for name, model in models.items():
        files.append((f"{name}.joblib", _joblib(model), False, f"scikit-learn {name}, joblib"))
        files.append((f"{name}.pkl", pickle.dumps(model), False, f"scikit-learn {name}, pickle"))
    files.append(("logreg.pkl.gz", _joblib(models["logreg"], ("gzip", 3)), False,
                  "scikit-learn, gzip'd joblib"))
    files.append(("forest.joblib.z", _joblib(models["forest"], 3), False,
                  "scikit-learn, zlib joblib"))
    files.append(("forest.joblib.xz", _joblib(models["forest"], ("xz", 3)), False,
                  "scikit-learn, xz joblib"))
    import datetime as dt

    plain = {"epochs": 3, "lr": 0.01, "when": dt.datetime(2024, 1, 2), "tags": {"a", "b"},
             "order": OrderedDict(a=1)}
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        files.append((f"config-p{proto}.bin", pickle.dumps(plain, protocol=proto), False,
                      f"plain data, protocol {proto}, named .bin"))
    entries = []
    for name, data, malicious, covers in files:
        (directory / name).write_bytes(data)
        entries.append(Entry(name, malicious, covers))
    return entries


def _tar(members: dict[str, bytes]) -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _runstring(cmd: str) -> bytes:
    code = f"import os; os.system({cmd!r})"
    return (b"\x80\x02cnumpy.testing._private.utils\nrunstring\n" + _text(code, b"X")
            + b"}\x86R.")


def _copyreg_extension(cmd: str) -> bytes:
    """add_extension('os', 'system', 0xBEEF), then EXT2 0xBEEF: os.system without naming it
    in a GLOBAL opcode next to its call."""
    return (b"\x80\x02ccopyreg\nadd_extension\n" + _text("os", b"X") + _text("system", b"X")
            + b"M\xef\xbe\x87R0" + b"\x83\xef\xbe" + _text(cmd, b"X") + b"\x85R.")


def _copyreg_reconstructor(cmd: str) -> bytes:
    """copyreg._reconstructor(object, base, state) with the base computed by
    getattr(import_module('subprocess'), 'Popen'): base.__new__ and __init__ get the state."""
    return (b"\x80\x02ccopyreg\n_reconstructor\n" + b"cbuiltins\nobject\n"
            + b"cbuiltins\ngetattr\n" + b"cimportlib\nimport_module\n"
            + _text("subprocess", b"X") + b"\x85R" + _text("Popen", b"X") + b"\x86R"
            + _text(cmd, b"X") + b"\x87R.")


def _reducer_of_reducer(cmd: str) -> bytes:
    """getattr(importlib.import_module('os'), 'system')(cmd): every call is on a computed value."""
    return (b"\x80\x02cbuiltins\ngetattr\n" + b"cimportlib\nimport_module\n" + _text("os", b"X")
            + b"\x85R" + _text("system", b"X") + b"\x86R" + _text(cmd, b"X") + b"\x85R.")


def _nested_gzip(data: bytes, levels: int) -> bytes:
    for _ in range(levels):
        data = gzip.compress(data)
    return data


def compress_variants(data: bytes) -> dict[str, bytes]:
    """The same bytes in each compression ci-ml opens (for tests of the layers themselves)."""
    return {"gzip": gzip.compress(data), "bz2": bz2.compress(data), "xz": lzma.compress(data),
            "zlib": zlib.compress(data)}
