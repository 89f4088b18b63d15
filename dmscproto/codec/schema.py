"""Schema checks for the CBOR maps of structured TLV values (draft-dmsc-protocol-00,
Section 7.1): the helpers :mod:`.values` builds each ``from_cbor()`` from, raising
:class:`DecodeError` with INVALID_TLV_VALUE."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .cbor import check_key_order
from .errors import DecodeError
from .registry import ErrorCode

T = TypeVar("T")
AttrValue = str | int | bool
ConstraintValue = AttrValue | tuple[AttrValue, ...]


def _invalid(what: str) -> DecodeError:
    return DecodeError(ErrorCode.INVALID_TLV_VALUE, 0, what)


_INT = {int}
_STR = {str}
_ATTR_TYPES = {str, int, bool}


class _Keys:
    """The keys of one CDDL map with integer keys: which are required, which optional.

    :meth:`check` accepts a map at the cost of one set lookup: every sorted key tuple a
    valid map can have is precomputed.  Anything else goes to :func:`_map`, which names
    the first problem.
    """

    def __init__(self, what: str, required: frozenset[int], optional: frozenset[int]) -> None:
        self.what, self.required, self.allowed = what, required, required | optional
        tuples = {tuple(sorted(required))}
        for key in optional:
            tuples |= {tuple(sorted((*t, key))) for t in tuples}
        self.valid = frozenset(tuples)

    def check(self, obj: Any) -> dict[int, Any]:
        valid = type(obj) is dict and tuple(obj) in self.valid
        if valid and (not obj or {*map(type, obj)} == _INT):
            return obj  # type: ignore[no-any-return]
        return _map(obj, self.what, self.required, self.allowed)


def _map(obj: Any, what: str, required: frozenset[int], allowed: frozenset[int]) -> dict[int, Any]:
    if not isinstance(obj, dict):
        raise _invalid(f"{what} is not a map")
    keys = list(obj)
    if keys and set(map(type, keys)) != {int}:
        raise _invalid(f"{what} has a key that is not an unsigned integer")
    if not required.issubset(keys):
        raise _invalid(f"{what} lacks key(s) {sorted(required.difference(keys))}")
    if not allowed.issuperset(keys):
        extra = sorted(k for k in keys if k not in allowed)
        raise _invalid(f"{what} has undefined key(s) {extra}")
    check_key_order(keys)
    return obj


def _text(v: Any, what: str) -> str:
    if type(v) is not str:
        raise _invalid(f"{what} is not a text string")
    return v


def _absent(m: dict[int, Any], key: int, what: str) -> None:
    """Member ``key`` of ``m`` is None: absent is fine, null is not (Section 7.1)."""
    if key in m:
        raise _invalid(f"{what} is null")


def _opt_text(m: dict[int, Any], key: int, what: str) -> str | None:
    """``? key => tstr``."""
    v = m.get(key)
    if type(v) is str:
        return v
    if v is None:
        _absent(m, key, what)
        return None
    raise _invalid(f"{what} is not a text string")


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise _invalid(f"{what} is not an unsigned integer")
    return v


def _bytes(v: Any, what: str, size: int | None = None) -> bytes:
    if type(v) is not bytes or (size is not None and len(v) != size):
        raise _invalid(f"{what} is not a byte string" + (f" of {size} octets" if size else ""))
    return v


def _texts(v: Any, what: str) -> tuple[str, ...]:
    """``[* tstr]``."""
    if type(v) is list and {*map(type, v)} <= _STR:
        return tuple(v)
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    raise _invalid(f"{what} is not a text string")


def _opt_texts(m: dict[int, Any], key: int, what: str) -> tuple[str, ...]:
    """``? key => [+ tstr]``: absent is empty, present must not be."""
    v = m.get(key)
    if v is None:
        _absent(m, key, what)
        return ()
    if v == []:
        raise _invalid(f"{what} is present but empty")
    return _texts(v, what)


def _array(v: Any, what: str, item: Callable[[Any], T]) -> tuple[T, ...]:
    if type(v) is not list:
        raise _invalid(f"{what} is not an array")
    return tuple(map(item, v))


def _opt_array(m: dict[int, Any], key: int, what: str,
               item: Callable[[Any], T]) -> tuple[T, ...]:
    """``? key => [+ item]``."""
    v = m.get(key)
    if v is None:
        _absent(m, key, what)
        return ()
    if v == []:
        raise _invalid(f"{what} is present but empty")
    return _array(v, what, item)


def _attr_value(v: Any, what: str) -> AttrValue:
    if type(v) not in _ATTR_TYPES:
        raise _invalid(f"{what} is not a text string, integer or boolean")
    return v  # type: ignore[no-any-return]


def _opt(d: dict[Any, Any], key: Any, value: Any) -> None:
    if value is not None:
        d[key] = value


def _opt_seq(d: dict[Any, Any], key: Any, value: Iterable[Any]) -> None:
    items = list(value)
    if items:
        d[key] = items
