"""Pickles in the byte layout of the official CIFAR-10 batches: what Python 2's cPickle wrote.

The official `cifar-10-python.tar.gz` was pickled by Python 2 with protocol 2, so its text and
raw bytes are py2 `str` objects (SHORT_BINSTRING / BINSTRING, never BINUNICODE or BINBYTES),
numpy is named `numpy.core.multiarray`, small ints are BININT1/BININT2, and lists and dicts are
written in batches of 1,000 (MARK ... APPENDS / SETITEMS). Every string, global, list and dict is
memoised (BINPUT below 256, LONG_BINPUT above), tuples are not: the real 158-byte
`batches.meta` comes out byte for byte this way.

Written opcode by opcode with no help from Python 3's pickler, so the fixture cannot share its
assumptions with the reader it tests.
"""
from __future__ import annotations

import struct

import numpy as np

BATCHSIZE = 1000  # cPickle's batch of APPENDS / SETITEMS


class Global:
    """A `module.name` global, written with GLOBAL (protocol 2 has no STACK_GLOBAL)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class Reduce:
    """`callable(*args)`, then BUILD with `state` when given: what __reduce__ returns."""

    def __init__(self, func: Global, args: tuple, state=None):
        self.func, self.args, self.state = func, args, state


RECONSTRUCT = Global("numpy.core.multiarray", "_reconstruct")
NDARRAY = Global("numpy", "ndarray")
DTYPE = Global("numpy", "dtype")


def dtype_node(dtype: np.dtype) -> Reduce:
    """numpy.dtype('u1', 0, 1) with its py2 state (3, '|', None, None, None, -1, -1, 0)."""
    order = "|" if dtype.itemsize == 1 else "<"
    return Reduce(DTYPE, (dtype.str[1:], 0, 1), (3, order, None, None, None, -1, -1, 0))


def array_node(a: np.ndarray) -> Reduce:
    """An array as numpy 1.x pickled it under Python 2: its raw data one py2 str."""
    a = np.ascontiguousarray(a)
    return Reduce(RECONSTRUCT, (NDARRAY, (0,), b"b"),
                  (1, tuple(a.shape), dtype_node(a.dtype), False, a.tobytes()))


class _Writer:
    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self.memo = 0

    def put(self) -> None:
        self.memo += 1
        if self.memo < 256:
            self.out += b"q" + bytes([self.memo])  # BINPUT
        else:
            self.out += b"r" + struct.pack("<I", self.memo)  # LONG_BINPUT

    def string(self, raw: bytes) -> None:
        if len(raw) < 256:
            self.out += b"U" + bytes([len(raw)]) + raw  # SHORT_BINSTRING
        else:
            self.out += b"T" + struct.pack("<i", len(raw)) + raw  # BINSTRING
        self.put()

    def integer(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])  # BININT1
        elif 0 <= n < 65536:
            self.out += b"M" + struct.pack("<H", n)  # BININT2
        else:
            self.out += b"J" + struct.pack("<i", n)  # BININT

    def batched(self, items, one, end: bytes) -> None:
        for lo in range(0, len(items), BATCHSIZE):
            self.out += b"("  # MARK
            for item in items[lo:lo + BATCHSIZE]:
                one(item)
            self.out += end

    def save(self, obj) -> None:
        if obj is None:
            self.out += b"N"
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"  # NEWTRUE / NEWFALSE
        elif isinstance(obj, int):
            self.integer(obj)
        elif isinstance(obj, float):
            self.out += b"G" + struct.pack(">d", obj)  # BINFLOAT
        elif isinstance(obj, str):
            self.string(obj.encode("latin1"))
        elif isinstance(obj, bytes):
            self.string(obj)
        elif isinstance(obj, tuple):
            self.tuple(obj)
        elif isinstance(obj, list):
            self.out += b"]"  # EMPTY_LIST
            self.put()
            self.batched(obj, self.save, b"e")  # APPENDS
        elif isinstance(obj, dict):
            self.out += b"}"  # EMPTY_DICT
            self.put()
            self.batched(list(obj.items()), lambda kv: (self.save(kv[0]), self.save(kv[1])),
                         b"u")  # SETITEMS
        elif isinstance(obj, np.ndarray):
            self.save(array_node(obj))
        elif isinstance(obj, Global):
            self.out += b"c" + f"{obj.module}\n{obj.name}\n".encode()
            self.put()
        elif isinstance(obj, Reduce):
            self.save(obj.func)
            self.tuple(obj.args)
            self.out += b"R"  # REDUCE
            self.put()
            if obj.state is not None:
                self.save(obj.state)
                self.out += b"b"  # BUILD
        else:
            raise TypeError(f"no py2 layout for {type(obj).__name__}")

    def tuple(self, t: tuple) -> None:
        if len(t) == 0:
            self.out += b")"
        elif len(t) <= 3:
            for x in t:
                self.save(x)
            self.out += b"\x85\x86\x87"[len(t) - 1:len(t)]  # TUPLE1..3
        else:
            self.out += b"("
            for x in t:
                self.save(x)
            self.out += b"t"  # TUPLE


def dumps(obj) -> bytes:
    """`obj` pickled as Python 2's cPickle wrote CIFAR-10's batches (protocol 2)."""
    w = _Writer()
    w.save(obj)
    return bytes(w.out + b".")  # STOP


def batches_meta() -> bytes:
    """The official batches.meta: 158 bytes."""
    from ffcv_resnet.data.cifar import CLASSES
    return dumps({"num_cases_per_batch": 10000, "label_names": list(CLASSES), "num_vis": 3072})
