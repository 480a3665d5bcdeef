"""Static pickle analysis: imports found without ever unpickling."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import pytest
import torch

from ci_ml.scan.pickles import UNRESOLVED, Verdict, analyze_pickle, classify


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def test_hand_written_reduce_of_os_system() -> None:
    data = b"\x80\x02" + _global("os", "system") + _unicode("id") + b"\x85R."
    report = analyze_pickle(data)
    assert [(i.qualname, i.verdict) for i in report.imports] == [("os.system", Verdict.DANGEROUS)]
    assert report.calls == 1 and report.protocol == 2 and report.error is None


def test_stack_global_operands_through_the_memo() -> None:
    # protocol 4: push "subprocess", memoize it, push "check_output", then fetch "subprocess"
    # back from the memo and reorder: STACK_GLOBAL must still resolve both operands.
    data = (b"\x80\x04" + _unicode("subprocess") + b"\x94" + b"0"            # MEMOIZE, POP
            + b"h\x00" + _unicode("check_output") + b"\x93" + b")R.")        # BINGET 0
    report = analyze_pickle(data)
    assert [i.qualname for i in report.imports] == ["subprocess.check_output"]
    assert report.imports[0].verdict is Verdict.DANGEROUS


def test_unresolvable_stack_global_is_a_gadget() -> None:
    data = b"\x80\x04" + b"K\x01K\x02" + b"\x93" + b"."    # operands are ints, not strings
    imp = analyze_pickle(data).imports[0]
    assert (imp.module, imp.name) == (UNRESOLVED, UNRESOLVED)
    assert imp.verdict is Verdict.GADGET


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_has_only_safe_imports(protocol: int) -> None:
    payload = {"a": [1, 2.5, "x"], "b": collections.OrderedDict(k=(1, 2)), "c": {3, 4}}
    report = analyze_pickle(pickle.dumps(payload, protocol=protocol))
    assert report.error is None
    assert all(i.verdict is Verdict.SAFE for i in report.imports)


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
    assert {i.verdict for i in report.imports} == {Verdict.SAFE}


def test_payload_hidden_in_a_second_pickle_is_found() -> None:
    data = pickle.dumps([1, 2], protocol=2) + b"\x80\x02" + _global("posix", "system") + b")R."
    assert [i.qualname for i in analyze_pickle(data).imports] == ["posix.system"]


@pytest.mark.parametrize(("data", "fragment"), [
    (b"\x80\x02cos\nsys", "newline"),
    (b"\x80\x02K\x01", "STOP"),
    (b"\x80\x02\xff\xfe.", "unknown"),
    (b"", "STOP"),
])
def test_malformed_streams_report_an_error(data: bytes, fragment: str) -> None:
    report = analyze_pickle(data)
    assert report.error is not None and fragment.lower() in report.error.lower()


@pytest.mark.parametrize(("module", "name", "verdict"), [
    ("builtins", "eval", Verdict.DANGEROUS), ("__builtin__", "getattr", Verdict.DANGEROUS),
    ("nt", "system", Verdict.DANGEROUS), ("runpy", "run_path", Verdict.DANGEROUS),
    ("socket", "create_connection", Verdict.DANGEROUS),
    ("operator", "attrgetter", Verdict.GADGET), ("torch.storage", "_load_from_bytes",
                                                 Verdict.GADGET),
    ("sklearn.linear_model._logistic", "LogisticRegression", Verdict.UNKNOWN),
    ("builtins", "set", Verdict.SAFE), ("torch", "FloatStorage", Verdict.SAFE),
    ("numpy.core.multiarray", "_reconstruct", Verdict.SAFE),
])
def test_classification(module: str, name: str, verdict: Verdict) -> None:
    assert classify(module, name) is verdict
