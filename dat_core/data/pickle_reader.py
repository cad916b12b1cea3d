"""Plain data out of a pickle without unpickling it: CIFAR's python batches, read as data.

`pickle` runs whatever a file names (a restricted `Unpickler` still calls the functions it allows, and BUILD can
set attributes on them). Here `pickletools.genops` only parses the opcodes and a small stack machine builds dicts,
lists, tuples, strings, numbers and numpy arrays from them; nothing named in the file is imported or called. The
few names a numpy array's pickle mentions are recognized as words and turned into `np.frombuffer` calls on the
bytes the file holds; any other name, or any opcode outside this list, stops the read.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMPY = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric", "numpy")
_NAMES = {"_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar"}


class PickleDataError(ValueError):
    """The pickle holds something other than plain data and numpy arrays (or is malformed)."""


@dataclass(frozen=True)
class _Name:
    """A global the file names (`numpy.dtype`, …): a word, never imported."""
    name: str


@dataclass
class _DType:
    code: str
    order: str = "="

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.code)
        if dtype.hasobject or dtype.fields is not None:
            raise PickleDataError(f"refusing an array of dtype {self.code!r}: only plain numbers are read")
        return dtype.newbyteorder(self.order) if self.order in ("<", ">") else dtype


@dataclass
class _Array:
    """`ndarray._reconstruct(...)` awaiting its BUILD (shape, dtype, raw bytes)."""
    array: np.ndarray | None = None


_STRINGS = {"BINSTRING", "SHORT_BINSTRING", "STRING"}   # py2 str, read as bytes (the encoding="bytes" of CIFAR)
_LITERALS = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT", "BINUNICODE",
             "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def read_pickle_data(data: bytes) -> Any:
    """The dicts, lists, strings, numbers and numpy arrays a pickle holds (protocols 0-5, py2 strings as bytes)."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return _resolved(stack.pop())
            if name in _LITERALS:
                stack.append(arg)
            elif name in _STRINGS:
                stack.append(arg.encode("latin-1"))
            elif name == "BYTEARRAY8":
                stack.append(bytes(arg))
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
                stack.append({"EMPTY_DICT": dict, "EMPTY_LIST": list, "EMPTY_TUPLE": tuple}[name]())
            elif name in ("DICT", "LIST", "TUPLE", "SETITEMS", "APPENDS"):
                items = _pop_mark(stack, marks)
                if name == "TUPLE":
                    stack.append(tuple(items))
                elif name == "LIST":
                    stack.append(items)
                elif name == "APPENDS":
                    _of(stack[-1], list).extend(items)
                else:
                    target = {} if name == "DICT" else _of(stack[-1], dict)
                    target.update(zip(items[::2], items[1::2]))
                    if name == "DICT":
                        stack.append(target)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = stack[-n:]
                del stack[-n:]
                stack.append(tuple(items))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _of(stack[-1], dict)[key] = value
            elif name == "APPEND":
                value = stack.pop()
                _of(stack[-1], list).append(value)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                module, attr = arg.split(" ", 1) if name == "GLOBAL" else _pop_two_names(stack)
                stack.append(_global(module, attr))
            elif name == "REDUCE":
                args = stack.pop()
                stack.append(_call(stack.pop(), args))
            elif name == "BUILD":
                state = stack.pop()
                _build(stack[-1], state)
            else:
                raise PickleDataError(f"refusing pickle opcode {name}: only plain data and numpy arrays are read")
    except PickleDataError:
        raise
    except (IndexError, KeyError, TypeError, ValueError, UnicodeError, RecursionError, MemoryError) as e:
        raise PickleDataError(f"malformed pickle ({type(e).__name__}: {e})") from None
    raise PickleDataError("malformed pickle: no STOP")


def _pop_mark(stack: list[Any], marks: list[int]) -> list[Any]:
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    return items


def _pop_two_names(stack: list[Any]) -> tuple[str, str]:
    attr, module = stack.pop(), stack.pop()
    if not (isinstance(module, str) and isinstance(attr, str)):
        raise PickleDataError("malformed pickle: a global named by something other than text")
    return module, attr


def _of(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise PickleDataError(f"malformed pickle: expected a {kind.__name__}, found a {type(value).__name__}")
    return value


def _global(module: str, attr: str) -> _Name:
    if (module, attr) == ("_codecs", "encode") or (module in _NUMPY and attr in _NAMES):
        return _Name(attr if module != "_codecs" else "encode")
    raise PickleDataError(f"refusing to read global {module}.{attr}: only plain data and numpy arrays are read")


def _call(func: Any, args: Any) -> Any:
    """What the few calls a numpy pickle makes would return, computed here from the file's bytes."""
    if not isinstance(func, _Name) or type(args) is not tuple:
        raise PickleDataError("refusing a call of something that is not a numpy array's constructor")
    if func.name == "encode" and len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")   # how protocol 2 writes bytes
    if func.name == "dtype" and len(args) == 3 and isinstance(args[0], (str, bytes)):
        return _DType(_text(args[0]))
    if func.name == "_reconstruct" and len(args) == 3 and args[0] == _Name("ndarray"):
        return _Array()
    if func.name == "_frombuffer" and len(args) == 4 and isinstance(args[1], _DType):
        buf, dtype, shape, order = args
        return np.frombuffer(_bytes(buf), dtype.resolve()).reshape(shape, order=order).copy()
    if func.name == "scalar" and len(args) == 2 and isinstance(args[0], _DType):
        return np.frombuffer(_bytes(args[1]), args[0].resolve())[0]
    raise PickleDataError(f"refusing a call of {func.name} with these arguments")


def _build(obj: Any, state: Any) -> None:
    """BUILD on the two things a numpy pickle builds: a dtype's byte order, an array's shape and bytes."""
    if isinstance(obj, _DType) and type(state) is tuple and len(state) >= 2 and isinstance(state[1], (str, bytes)):
        obj.order = _text(state[1])
    elif isinstance(obj, _Array) and obj.array is None and type(state) is tuple and len(state) == 5 \
            and isinstance(state[2], _DType):
        _, shape, dtype, fortran, raw = state
        obj.array = np.frombuffer(_bytes(raw), dtype.resolve()).reshape(shape, order="F" if fortran else "C").copy()
    else:
        raise PickleDataError(f"refusing to set the state of a {type(obj).__name__}")


def _text(value: str | bytes) -> str:
    """A dtype code or byte order, which Python 2 wrote as bytes."""
    return value.decode("ascii") if isinstance(value, bytes) else value


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):   # protocol 0 writes an array's bytes as latin-1 text
        return value.encode("latin-1")
    if not isinstance(value, bytes):
        raise PickleDataError(f"malformed pickle: array data is a {type(value).__name__}, not bytes")
    return value


def _resolved(value: Any, done: dict[int, Any] | None = None) -> Any:
    """`value` with every array placeholder replaced by its array. Each object is rebuilt once and shared where the
    file shares it (memo references): rebuilt per reference, `x = [x, x]` nested 24 deep took 40 s from 174 bytes."""
    done = {} if done is None else done
    if id(value) in done:
        return done[id(value)]
    if isinstance(value, _Array):
        if value.array is None:
            raise PickleDataError("malformed pickle: an array without its data")
        out: Any = value.array
    elif isinstance(value, (_Name, _DType)):
        raise PickleDataError("refusing a pickle that holds a global name rather than data")
    elif type(value) is dict:
        out = {_resolved(k, done): _resolved(v, done) for k, v in value.items()}
    elif type(value) is list:
        out = [_resolved(v, done) for v in value]
    elif type(value) is tuple:
        out = tuple(_resolved(v, done) for v in value)
    else:
        return value
    done[id(value)] = out
    return out
