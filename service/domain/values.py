"""SecretValue: a plaintext holder that cannot leak by accident.

`repr`, `str` and f-strings show a mask, so a value that ends up in a log call, an exception
message or a debugger print reveals nothing. The only way to the text is `reveal()`, which is
easy to grep for: it is called where a value is sealed, compared or handed to the resolver.
"""

from __future__ import annotations

import hmac
from typing import Final

MASK: Final = "***"


class SecretValue:
    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text

    def encode(self) -> bytes:
        return self._text.encode("utf-8")

    def __repr__(self) -> str:
        return f"SecretValue({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        # Constant time: comparing a guess against a stored value must not leak its prefix.
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self.encode(), other.encode())

    def __hash__(self) -> int:
        raise TypeError("SecretValue is not hashable: hashing would make it comparable by timing")

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("SecretValue cannot be pickled")

    def __len__(self) -> int:
        return len(self._text)
