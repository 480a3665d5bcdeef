"""The allow-list: globals that plain tensors, arrays, containers and dates import.

Only exact (module, name) pairs; nothing is allowed by module alone. These are the
constructors torch.save, numpy, joblib and the standard library write for data, and
calling them with any arguments builds data, not behaviour.
"""

from __future__ import annotations

_TORCH_REBUILD = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                  "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
                  "_rebuild_sparse_tensor", "_rebuild_nested_tensor",
                  "_rebuild_device_tensor_from_numpy", "_rebuild_meta_tensor_no_storage",
                  "_rebuild_wrapper_subclass", "_rebuild_device_tensor_from_cpu_tensor")
_TORCH_TYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
                "float", "double", "half", "long", "int", "short", "cfloat", "cdouble",
                "qint8", "quint8", "qint32", "float8_e4m3fn", "float8_e5m2", "Size", "device",
                "dtype", "memory_format", "contiguous_format", "channels_last",
                "channels_last_3d", "preserve_format", "strided", "sparse_coo", "Tensor",
                "per_tensor_affine", "per_channel_affine", "layout")
_TORCH_STORAGES = ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage",
                   "LongStorage", "IntStorage", "ShortStorage", "CharStorage", "ByteStorage",
                   "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
                   "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage",
                   "QUInt2x4Storage", "UntypedStorage", "TypedStorage")
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_SCALARS = ("float16", "float32", "float64", "longdouble", "int8", "int16", "int32",
                  "int64", "uint8", "uint16", "uint32", "uint64", "bool_", "complex64",
                  "complex128", "str_", "bytes_", "void", "datetime64", "timedelta64",
                  "intc", "uintc", "longlong", "ulonglong", "float_", "int_", "bool")

SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    # Containers and scalars the standard library pickles as data.
    *(("builtins", n) for n in ("set", "frozenset", "slice", "complex", "bytearray", "bytes",
                                "range", "dict", "list", "tuple", "int", "float", "bool", "str",
                                "object", "NotImplemented", "Ellipsis")),
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("collections", "Counter"), ("_codecs", "encode"), ("codecs", "encode"),
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"), ("decimal", "Decimal"),
    ("fractions", "Fraction"), ("uuid", "UUID"), ("enum", "Enum"),
    # torch.save: tensors, parameters, storages, dtypes, devices.
    *(("torch._utils", n) for n in _TORCH_REBUILD),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"), ("torch", "Tensor"), ("torch", "Size"),
    *(("torch", n) for n in _TORCH_TYPES), *(("torch", n) for n in _TORCH_STORAGES),
    ("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage"),
    # numpy arrays, dtypes and scalars (numpy 1 and 2 module paths), random states.
    *((m, n) for m in _NUMPY_CORE for n in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "ma"),
    ("numpy.ma.core", "_mareconstruct"), ("numpy.ma.core", "MaskedArray"),
    *(("numpy", n) for n in _NUMPY_SCALARS),
    *(("numpy.dtypes", f"{n.capitalize().rstrip('_')}DType") for n in _NUMPY_SCALARS),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"),
    # joblib's placeholder for an array whose bytes follow the pickle opcode that builds it.
    ("joblib.numpy_pickle", "NumpyArrayWrapper"), ("joblib.numpy_pickle_compat", "NDArrayWrapper"),
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
    # scikit-learn's tree structure, rebuilt by calling the class with integer counts.
    ("sklearn.tree._tree", "Tree"),
})
