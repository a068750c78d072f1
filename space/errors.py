"""One error type for every way a genotype or space can be wrong.

The CLI prints `str(error)` on one line and exits with code 2, so the message
always starts with the path of the offending field, e.g.
`stages[2].blocks[0].branches[1][0].kernel: 4 is even; kernels must be odd`.
"""
from __future__ import annotations


class GenotypeError(ValueError):
    def __init__(self, path: str, reason: str):
        self.path = printable(path)
        self.reason = printable(reason)
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)

    def within(self, prefix: str) -> "GenotypeError":
        """The same error seen from an enclosing document (`prefix` + own path)."""
        if not prefix:
            return self
        if not self.path:
            return GenotypeError(prefix, self.reason)
        sep = "" if self.path.startswith("[") else "."
        return GenotypeError(prefix + sep + self.path, self.reason)


def join(path: str, key: str | int) -> str:
    """Extend a dotted/bracketed field path by a key or list index (a very long key shortened, so the
    message stays one readable line)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = key if len(key) <= 40 else key[:37] + "..."
    return f"{path}.{key}" if path else key


def printable(text: str) -> str:
    """`text` with each unprintable character written as its escape: a document may name a field with a
    line break in it, and the message must still be one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
