"""Static pickle analysis: imports found, rated by what they reach and how the load uses
them, without ever unpickling."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import pytest
import torch

from ci_ml.scan.interface import Severity
from ci_ml.scan.pickle_rules import UNRESOLVED, Kind, rate
from ci_ml.scan.pickles import Use, analyze_pickle, looks_like_pickle


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def test_hand_written_reduce_of_os_system() -> None:
    data = b"\x80\x02" + _global("os", "system") + _unicode("id") + b"\x85R."
    report = analyze_pickle(data)
    assert [(i.qualname, i.kind, i.uses) for i in report.imports] == [
        ("os.system", Kind.DANGEROUS, Use.REFERENCED | Use.CALLED)]
    assert report.imports[0].severity is Severity.CRITICAL
    assert report.calls == 1 and report.protocol == 2 and report.error is None


def test_stack_global_operands_through_the_memo() -> None:
    # protocol 4: push "subprocess", memoize it, push "check_output", then fetch "subprocess"
    # back from the memo and reorder: STACK_GLOBAL must still resolve both operands.
    data = (b"\x80\x04" + _unicode("subprocess") + b"\x94" + b"0"            # MEMOIZE, POP
            + b"h\x00" + _unicode("check_output") + b"\x93" + b")R.")        # BINGET 0
    report = analyze_pickle(data)
    assert [i.qualname for i in report.imports] == ["subprocess.check_output"]
    assert report.imports[0].kind is Kind.DANGEROUS


def test_unresolvable_stack_global_is_a_gadget() -> None:
    data = b"\x80\x04" + b"K\x01K\x02" + b"\x93" + b"."    # operands are ints, not strings
    imp = analyze_pickle(data).imports[0]
    assert (imp.module, imp.name) == (UNRESOLVED, UNRESOLVED)
    assert imp.kind is Kind.GADGET and imp.severity is Severity.HIGH


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_has_only_safe_imports(protocol: int) -> None:
    payload = {"a": [1, 2.5, "x"], "b": collections.OrderedDict(k=(1, 2)), "c": {3, 4}}
    report = analyze_pickle(pickle.dumps(payload, protocol=protocol))
    assert report.error is None
    assert all(i.kind is Kind.SAFE and i.severity is None for i in report.imports)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_save_of_tensors_is_safe(legacy: bool) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3), "b": torch.ones(2, dtype=torch.int64)}, buffer,
               _use_new_zipfile_serialization=not legacy)
    data = buffer.getvalue()
    if not legacy:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    report = analyze_pickle(data)
    assert report.error is None and report.imports
    assert {i.kind for i in report.imports} == {Kind.SAFE}
    assert report.pickles == (5 if legacy else 1)


def test_payload_hidden_in_a_second_pickle_is_found() -> None:
    data = pickle.dumps([1, 2], protocol=2) + b"\x80\x02" + _global("posix", "system") + b")R."
    assert [i.qualname for i in analyze_pickle(data).imports] == ["posix.system"]


@pytest.mark.parametrize(("data", "fragment"), [
    (b"\x80\x02cos\nsys", "newline"),
    (b"\x80\x02K\x01", "STOP"),
    (b"\x80\x02\xff\xfe.", "unknown"),
    (b"\x80\x02.\x80\x02K\x01", "STOP"),
])
def test_malformed_streams_report_an_error(data: bytes, fragment: str) -> None:
    report = analyze_pickle(data)
    assert report.error is not None and fragment.lower() in report.error.lower()


@pytest.mark.parametrize(("module", "name", "kind"), [
    ("builtins", "eval", Kind.DANGEROUS), ("__builtin__", "getattr", Kind.DANGEROUS),
    ("nt", "system", Kind.DANGEROUS), ("runpy", "run_path", Kind.DANGEROUS),
    ("socket", "create_connection", Kind.DANGEROUS), ("_posixsubprocess", "fork_exec",
                                                      Kind.DANGEROUS),
    ("linecache", "os.system", Kind.DANGEROUS), ("sklearn.utils", "sys", Kind.DANGEROUS),
    ("numpy.testing._private.utils", "runstring", Kind.DANGEROUS),
    ("numpy.testing", "runstring", Kind.DANGEROUS), ("cProfile", "run", Kind.DANGEROUS),
    ("torch.storage", "_load_from_bytes", Kind.DANGEROUS),
    ("operator", "attrgetter", Kind.GADGET), ("_operator", "methodcaller", Kind.GADGET),
    ("copyreg", "add_extension", Kind.GADGET), ("builtins", "type", Kind.GADGET),
    ("mylib", "Thing.__globals__", Kind.GADGET),
    ("sklearn.linear_model._logistic", "LogisticRegression", Kind.UNKNOWN),
    ("mylib.io", "Reader", Kind.UNKNOWN),
    ("builtins", "set", Kind.SAFE), ("torch", "FloatStorage", Kind.SAFE),
    ("numpy.core.multiarray", "_reconstruct", Kind.SAFE), ("copy_reg", "_reconstructor",
                                                         Kind.SAFE),
])
def test_rating_by_what_a_name_reaches(module: str, name: str, kind: Kind) -> None:
    assert rate(module, name)[0] is kind


def test_dotted_name_reports_what_it_reaches() -> None:
    assert rate("linecache", "os.system") == (Kind.DANGEROUS, "os.system")


@pytest.mark.parametrize(("data", "use", "severity"), [
    # REDUCE calls it: an unknown callable called with arguments the file chose.
    (b"\x80\x02cmylib\nhelper\nK\x01\x85R.", Use.CALLED, Severity.HIGH),
    # NEWOBJ only instantiates a class (its code runs, but no arguments are chosen freely).
    (b"\x80\x02cmylib\nModel\n)\x81.", Use.INSTANTIATED, Severity.MEDIUM),
    # BUILD on the global itself: patches attributes of a module or class.
    (b"\x80\x02cmylib\nsettings\n}\x8c\x01a\x8c\x01b\x73b.", Use.MUTATED,
     Severity.HIGH),
])
def test_unknown_globals_are_rated_by_use(data: bytes, use: Use, severity: Severity) -> None:
    (imp,) = analyze_pickle(data).imports
    assert use in imp.uses and imp.severity is severity


def test_calling_a_computed_value_is_seen() -> None:
    # getattr(x, 'y')(1): the second REDUCE calls what the first returned.
    data = (b"\x80\x02cmylib\nfactory\n)R\x8c\x01y\x86" + b"." )
    assert analyze_pickle(data).computed_calls == ()
    data = b"\x80\x02cmylib\nfactory\n)R)R."
    assert len(analyze_pickle(data).computed_calls) == 1


def test_copyreg_extension_resolves_to_the_registered_global() -> None:
    data = (b"\x80\x02ccopyreg\nadd_extension\nX\x02\x00\x00\x00osX\x06\x00\x00\x00system"
            b"M\xef\xbe\x87R0\x83\xef\xbeX\x02\x00\x00\x00id\x85R.")
    names = {i.qualname: i.kind for i in analyze_pickle(data).imports}
    assert names == {"copyreg.add_extension": Kind.GADGET, "os.system": Kind.DANGEROUS}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_of_every_protocol_are_recognized_by_content(protocol: int) -> None:
    assert looks_like_pickle(pickle.dumps({"a": [1, 2]}, protocol=protocol), truncated=False)


@pytest.mark.parametrize("text", [b"hello world\n", b"1,2,3\n4,5,6\n", b'{"a": 1}',
                                  b"\x00\x00\x80?\x00\x00\x00@", b""])
def test_other_bytes_are_not_taken_for_pickles(text: bytes) -> None:
    assert not looks_like_pickle(text, truncated=False)


def test_joblib_arrays_are_skipped_exactly_so_what_follows_is_read() -> None:
    import joblib
    import numpy as np

    buf = io.BytesIO()
    joblib.dump({"w": np.arange(1000.0), "s": np.array(["ab", "c"]),
                 "evil": _Evil()}, buf)
    report = analyze_pickle(buf.getvalue())
    assert report.error is None
    assert "joblib array data (8000 bytes)" in report.skipped
    assert {i.qualname for i in report.imports if i.severity is Severity.CRITICAL} == {
        "posix.system"}


def test_legacy_torch_storages_are_skipped_and_a_pickle_after_them_is_read() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=False)
    clean = analyze_pickle(buf.getvalue())
    assert clean.error is None and "1 legacy torch storage(s)" in clean.skipped
    tainted = analyze_pickle(buf.getvalue() + pickle.dumps(_Evil(), protocol=2))
    assert "posix.system" in {i.qualname for i in tainted.imports}


def test_undecodable_rest_is_searched_for_imports() -> None:
    data = b"\x80\x02K\x01\xff" + b"junk cos\nsystem\n more"
    report = analyze_pickle(data)
    assert report.error is not None
    assert [i.qualname for i in report.raw_imports] == ["os.system"]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("true",)


def test_raw_tensor_bytes_are_not_taken_for_pickles_that_act() -> None:
    """Tensor data in archives is probed for pickles: random weights and bytes must not
    read as a pickle that imports or calls anything (a false high on a benign model)."""
    import numpy as np

    rng = np.random.default_rng(7)
    for _ in range(5000):
        n = int(rng.integers(1, 64))
        data = (rng.standard_normal(n).astype(np.float32) * 10.0).tobytes()
        if rng.random() < 0.3:
            data = rng.integers(0, 256, size=n * 4, dtype=np.uint8).tobytes()
        if looks_like_pickle(data, truncated=False):
            report = analyze_pickle(data)
            assert not any(i.severity and i.severity >= Severity.HIGH for i in report.imports)
            assert not report.computed_calls and (report.error is None or report.trailing)
