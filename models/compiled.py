"""The one decoding convention of every JSON contract: compiled first, the reference last.

1. msgspec decodes the payload in C straight into the contract's wire type
   (``models/wire.py``): types, ranges, lengths, enums, patterns, required and unknown
   fields. The contract's ``build`` turns it into the domain value.
2. The rules no type can state cost valid events almost nothing: a NUL can only be written
   escaped (``\\u0000``), so one search of the payload clears every string at once; a
   contract's ``build`` covers its own (the phase event: the depth of its metadata).
3. Whatever the compiled decoder rejects, or step 2 cannot clear, goes to the reference
   validator (orjson and the field parsers of ``models/validation.py``). It names the field
   and the reason, and it has the last word: the compiled path can make decoding faster, it
   can never change a verdict (tests/unit/test_contract.py holds the two to the same result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import msgspec

W = TypeVar("W")
T = TypeVar("T")

#: What msgspec raises on a payload it will not decode (RecursionError: very deep nesting).
_REFUSALS: Final = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
_BACKSLASH: Final = ord("\\")


def may_hold_nul(value: bytes) -> bool:
    """False if no string of the JSON ``value`` can hold a NUL (JSON can only escape it)."""
    # Most events hold no escape at all: one byte is found by memchr (about 20 ns for 400
    # bytes), where the six-byte escape costs a substring search (about 300 ns).
    return _BACKSLASH in value and b"\\u0000" in value


@dataclass(frozen=True, slots=True)
class CompiledContract(Generic[W, T]):
    """A contract's compiled decoder, its wire-to-domain step and its reference validator."""

    decoder: msgspec.json.Decoder[W]
    #: The domain value, or None where a rule the wire type cannot state needs the reference.
    build: Callable[[W], T | None]
    #: Decodes and validates like before msgspec, raising InvalidEventError (field, reason).
    reference: Callable[[bytes], T]

    def decode(self, value: bytes) -> T:
        decoded = self.compiled(value)
        return self.reference(value) if decoded is None else decoded

    def compiled(self, value: bytes) -> T | None:
        """What the compiled path makes of ``value``; None where it defers to the reference."""
        if may_hold_nul(value):
            return None
        try:
            wire = self.decoder.decode(value)
        except _REFUSALS:
            return None
        return self.build(wire)
