"""A small reader for R's lazy-load databases (`.rdx` index + `.rdb` objects),
enough to pull the character vectors out of the `janeaustenr` R package.

R serialises objects in its XDR format (big-endian), documented in R's
`serialize.c` and "R Internals" §1.8. Only the SEXP types a data package of
strings and factors uses are handled; anything else raises ValueError.
"""

import gzip
import struct
import zlib

NILVALUE, REFSXP, GLOBALENV, EMPTYENV, BASEENV, MISSINGARG = 254, 255, 253, 242, 241, 251


class _Reader:
    def __init__(self, data):
        self.b = data
        self.i = 0
        self.refs = []

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("truncated R serialisation")
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def header(self):
        if self.take(2) != b"X\n":
            raise ValueError("not XDR-serialised R data")
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # minimal reader version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported serialisation version {version}")

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if t in (NILVALUE, GLOBALENV, EMPTYENV, BASEENV, MISSINGARG):
            return None
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t == 9:  # CHARSXP
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", "replace")
        if t in (2, 6):  # LISTSXP / LANGSXP: pairlist
            out = []
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out.append((tag, self.item()))
            rest = self.item()
            if isinstance(rest, list):
                out.extend(rest)
            return out
        attrs = None
        if t == 16:  # STRSXP
            value = [self.item() for _ in range(self.int())]
        elif t in (13, 10):  # INTSXP, LGLSXP
            n = self.int()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif t == 14:  # REALSXP
            n = self.int()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif t in (19, 20):  # VECSXP, EXPRSXP
            value = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"unsupported R object type {t}")
        if has_attr:
            attrs = dict(self.item() or [])
        if attrs and "names" in attrs and t == 19:
            return dict(zip(attrs["names"], value))
        if attrs and "levels" in attrs and t == 13:
            levels = attrs["levels"]
            return [levels[v - 1] if v > 0 else None for v in value]
        return value


def _unpack(blob):
    """One stored object: a 4-byte length, then (type 1) zlib data, or a type byte first."""
    n = struct.unpack(">I", blob[:4])[0]
    kind = blob[4:5]
    if kind == b"Z":
        data = zlib.decompress(blob[5:])
    elif kind == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    if len(data) != n:
        raise ValueError("R object length mismatch")
    return data


def _load(data):
    r = _Reader(data)
    r.header()
    return r.item()


def read_lazyload(rdx_path, rdb_path):
    """All variables of a lazy-load database, as {name: value}."""
    with open(rdx_path, "rb") as f:
        index = _load(gzip.decompress(f.read()))
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    out = {}
    for name, (offset, length) in index["variables"].items():
        offset, length = int(offset), int(length)
        out[name] = _load(_unpack(rdb[offset:offset + length]))
    return out
