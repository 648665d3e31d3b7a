"""Blobs and point clouds received over shared memory, as numpy views.

A blob that arrived as a sealed memfd is mapped read-only in this process;
Blob.data and Cloud.points are numpy arrays over those very pages: no copy
is made, whatever the size.  Each view holds a reference to the mapping, so
the pages stay mapped for as long as any view (or the Blob/Cloud) is alive,
and are unmapped when the last one goes.  close() drops the object's own
reference early.  Views are read-only (the pages are sealed against writes:
writing would fault), so numpy refuses assignment with an error.  To keep
data while releasing the shared pages, copy it: np.array(cloud.points).

PLY (binary little-endian, "element vertex" first) is read from its header:
each property becomes a field of a numpy structured dtype over the data.
"""
import numpy as np

from ._ffi import ffi, lib
from .errors import BadArgument, Corrupt, Error

_PLY_TYPES = {
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
    "uchar": "u1", "uint8": "u1", "char": "i1", "int8": "i1",
    "ushort": "<u2", "uint16": "<u2", "short": "<i2", "int16": "<i2",
    "uint": "<u4", "uint32": "<u4", "int": "<i4", "int32": "<i4",
}
_CORRUPT = Corrupt.code


class _Pages:
    """numpy's handle on mapped pages; keeps their owner alive."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, owner, addr, shape, typestr, strides, descr=None):
        self.owner = owner
        ai = {"version": 3, "shape": shape, "typestr": typestr, "data": (addr, True),
              "strides": strides}
        if descr is not None:
            ai["descr"] = descr
        self.__array_interface__ = ai


def _view(owner, addr, shape, dtype, strides):
    dtype = np.dtype(dtype)
    descr = dtype.descr if dtype.fields else None
    return np.asarray(_Pages(owner, addr, shape, dtype.str, strides, descr))


class Blob:
    """A blob received whole (checksum verified).  name, size, content
    ("raw", "ply", "pcd"), via_fd (true when it came as a mapped memfd —
    then data is the shared pages themselves) and data: a read-only numpy
    uint8 view."""

    def __init__(self, owned, sender):
        self._blob = owned
        info = lib.bm_blob_info(owned)
        self.sender = sender
        self.name = ffi.string(info.name).decode(errors="replace")
        self.size = int(lib.bm_blob_size(owned))
        self.content = {0: "raw", 1: "ply", 2: "pcd"}.get(info.content, "raw")
        self.via_fd = bool(info.via_fd)
        self.crc = info.crc if info.has_crc else None
        self._addr = int(ffi.cast("uintptr_t", lib.bm_blob_data(owned)))

    @property
    def address(self):
        """Where the pages are mapped in this process (for checks)."""
        return self._addr

    @property
    def data(self):
        self._live()
        return _view(self._blob, self._addr, (self.size,), np.uint8, None)

    def bytes(self):
        """A copy of the content as bytes."""
        self._live()
        return ffi.unpack(ffi.cast("char *", self._addr), self.size)

    def _live(self):
        if self._blob is None:
            raise Error(-9, "the blob was closed")  # -EBADF

    def close(self):
        """Drops this object's hold on the pages (views keep their own)."""
        self._blob = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "%s(%r, %d bytes from %r)" % (type(self).__name__, self.name, self.size,
                                             self.sender)


class Cloud(Blob):
    """A point cloud (a PLY blob).  count; fields (property names);
    array: a structured numpy view of every point; points: (N,3) float view
    of x y z; colors: (N,3) uint8 view of red green blue, or None.  All
    read-only views of the shared pages, none a copy (unless the file's x y
    z are not stored side by side, when points is a copy)."""

    def __init__(self, owned, sender):
        super().__init__(owned, sender)
        head = ffi.unpack(ffi.cast("char *", self._addr), min(self.size, 65536))
        end = head.find(b"end_header\n")
        if not head.startswith(b"ply\n") or end < 0:
            raise Error(_CORRUPT, "blob %r is not a PLY file" % self.name)
        self._hlen = end + len("end_header\n")
        count, names, formats, fmt = None, [], [], None
        for line in head[:end].decode("ascii", "replace").splitlines():
            w = line.split()
            if not w or w[0] in ("comment", "obj_info", "ply"):
                continue
            if w[0] == "format":
                fmt = w[1] if len(w) > 1 else None
            elif w[0] == "element":
                if count is not None:
                    break  # only the first element (vertex) is read
                if len(w) != 3 or w[1] != "vertex" or not w[2].isdigit():
                    raise Error(_CORRUPT, "PLY %r: first element is not vertex" % self.name)
                count = int(w[2])
            elif w[0] == "property" and count is not None:
                if len(w) != 3 or w[1] not in _PLY_TYPES:
                    raise Error(_CORRUPT, "PLY %r: unsupported property %r" % (self.name, line))
                names.append(w[2])
                formats.append(_PLY_TYPES[w[1]])
        if fmt != "binary_little_endian" or count is None or not names:
            raise Error(_CORRUPT, "PLY %r: need binary_little_endian vertices" % self.name)
        self.dtype = np.dtype({"names": names, "formats": formats})
        self.count = count
        self.fields = tuple(names)
        if self._hlen + count * self.dtype.itemsize > self.size:
            raise Error(_CORRUPT, "PLY %r: %d points do not fit in %d bytes" %
                        (self.name, count, self.size))

    @property
    def array(self):
        self._live()
        return _view(self._blob, self._addr + self._hlen, (self.count,), self.dtype,
                     (self.dtype.itemsize,))

    def _triple(self, a, b, c):
        d = self.dtype
        if not all(k in d.fields for k in (a, b, c)):
            return None
        (ta, oa), (tb, ob), (tc, oc) = (d.fields[k][:2] for k in (a, b, c))
        if ta == tb == tc and ob == oa + ta.itemsize and oc == ob + ta.itemsize:
            self._live()
            return _view(self._blob, self._addr + self._hlen + oa, (self.count, 3), ta,
                         (d.itemsize, ta.itemsize))
        arr = self.array
        return np.stack([arr[a], arr[b], arr[c]], axis=1)

    @property
    def points(self):
        p = self._triple("x", "y", "z")
        if p is None:
            raise Error(_CORRUPT, "PLY %r has no x y z" % self.name)
        return p

    @property
    def colors(self):
        return self._triple("red", "green", "blue")


def build_ply(points, colors=None):
    """A fresh blob (bm_blob_t **) holding points (N,3) float32 and colors
    (N,3) uint8 as a binary PLY, written once into its shared pages."""
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] != 3:
        raise BadArgument(detail="points must be a numpy array of shape (N, 3)")
    if points.dtype != np.float32:
        raise BadArgument(detail="points must be float32, not %s" % points.dtype)
    n = points.shape[0]
    hdr = ("ply\nformat binary_little_endian 1.0\ncomment beastmesh\nelement vertex %d\n"
           "property float x\nproperty float y\nproperty float z\n" % n)
    stride = 12
    if colors is not None:
        if (not isinstance(colors, np.ndarray) or colors.shape != (n, 3) or
                colors.dtype != np.uint8):
            raise BadArgument(detail="colors must be a uint8 numpy array of shape (N, 3)")
        hdr += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        stride = 15
    hdr = (hdr + "end_header\n").encode()
    size = len(hdr) + n * stride
    bp = ffi.new("bm_blob_t **")
    rc = lib.bm_blob_new(size, bp)
    if rc < 0:
        from .errors import error_for
        raise error_for(rc, "cloud of %d points" % n)
    try:
        buf = ffi.buffer(lib.bm_blob_wdata(bp[0]), size)
        out = np.frombuffer(buf, np.uint8)
        out[:len(hdr)] = np.frombuffer(hdr, np.uint8)
        if colors is None:
            np.copyto(np.frombuffer(buf, np.float32, n * 3, len(hdr)).reshape(n, 3), points)
        else:
            rec = np.ndarray((n,), np.dtype({"names": ["p", "c"], "formats": [("<f4", 3),
                                                                              ("u1", 3)]}),
                             buf, len(hdr))
            rec["p"] = points
            rec["c"] = colors
    except BaseException:
        lib.bm_blob_destroy(bp)
        raise
    return bp
