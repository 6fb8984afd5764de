"""Internal to :mod:`fpsim.quant`: scale groups of an array, walked in chunks, and
the finite statistics of their rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import blocks as _blocks

if TYPE_CHECKING:
    from .spec import QuantSpec

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).smallest_subnormal)


def as_float(x) -> np.ndarray:
    if isinstance(x, np.ma.MaskedArray):
        _blocks.check_array(x)  # raises: masked arrays are refused
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        if arr.dtype.kind in "iu" and not isinstance(x, np.ndarray):
            arr = arr.astype(np.float64)
        else:
            raise TypeError(f"x must be a float array, got dtype {arr.dtype}")
    return arr


def prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class Groups:
    """The scale groups of an array of ``shape``: each group is one row of a 2-D
    (groups, elements) layout.  :meth:`bands` walks that layout in chunks of rows
    (padding blocks and tiles with zeros) and :meth:`put` writes a chunk's results
    back, so that no full-size temporary is needed."""

    def __init__(self, shape, spec: QuantSpec):
        self.shape = tuple(shape)
        self.spec = spec
        nd = len(shape)
        g = spec.granularity
        if g != "tensor" and nd == 0:
            raise ValueError(f"granularity={g!r} needs an array with at least one dimension")
        if g == "block" and isinstance(spec.block_size, tuple):
            if nd < 2:
                raise ValueError("2-D blocks need an array with at least two dimensions")
            self.kind = "tile"
        else:
            self.kind = g
        self.axis = None
        if self.kind in ("channel", "token", "block"):
            self.axis = _blocks.check_axis(spec.axis, nd)
            moved = list(self.shape)
            moved.append(moved.pop(self.axis))
            self.moved_shape = tuple(moved)
            self.rows, self.n = prod(moved[:-1]), moved[-1]
        if self.kind == "tensor":
            self.n_groups = 1
        elif self.kind in ("channel", "token"):
            self.n_groups = self.rows
        elif self.kind == "block":
            self.nb = -(-self.n // spec.block_size)
            self.n_groups = self.rows * self.nb
        else:
            br, bc = spec.block_size
            *lead, r, c = self.shape
            self.lead = prod(lead)
            self.tile_dims = (-(-r // br), -(-c // bc))
            self.n_groups = self.lead * self.tile_dims[0] * self.tile_dims[1]

    # -- whole-array layout (calibration, stochastic rounding) --
    def split(self, x: np.ndarray) -> np.ndarray:
        """(groups, group_len) array; pads blocks/tiles with zeros."""
        if self.kind == "tensor":
            return x.reshape(1, -1)
        if self.kind in ("channel", "token"):
            return np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
        if self.kind == "block":
            k = self.spec.block_size
            buf = np.zeros((self.rows, self.nb * k), dtype=x.dtype)
            buf[:, :self.n] = np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
            return buf.reshape(self.n_groups, k)
        br, bc = self.spec.block_size
        nr, nc = self.tile_dims
        *lead, r, c = x.shape
        buf = np.zeros((*lead, nr * br, nc * bc), dtype=x.dtype)
        buf[..., :r, :c] = x
        t = buf.reshape(self.lead, nr, br, nc, bc).transpose(0, 1, 3, 2, 4)
        return t.reshape(self.n_groups, br * bc)

    def join(self, g: np.ndarray) -> np.ndarray:
        """Inverse of split (drops padding)."""
        if self.kind == "tensor":
            return g.reshape(self.shape)
        if self.kind in ("channel", "token"):
            return np.moveaxis(g.reshape(self.moved_shape), -1, self.axis)
        if self.kind == "block":
            rows = g.reshape(self.rows, self.nb * self.spec.block_size)[:, :self.n]
            return np.moveaxis(rows.reshape(self.moved_shape), -1, self.axis)
        br, bc = self.spec.block_size
        nr, nc = self.tile_dims
        *lead, r, c = self.shape
        t = g.reshape(self.lead, nr, nc, br, bc).transpose(0, 1, 3, 2, 4)
        return t.reshape(*lead, nr * br, nc * bc)[..., :r, :c]

    # -- chunked layout --
    def new_out(self, dtype) -> np.ndarray:
        """An output array that :meth:`put` fills (axis moved last for vectors/blocks)."""
        if self.kind in ("channel", "token", "block"):
            return np.empty(self.moved_shape, dtype=dtype)
        return np.empty(self.shape, dtype=dtype)

    def finish(self, out: np.ndarray) -> np.ndarray:
        """The filled output of :meth:`new_out` in the input's layout."""
        if self.kind in ("channel", "token", "block"):
            return np.moveaxis(out, -1, self.axis)
        return out

    def bands(self, x: np.ndarray, *, whole: bool = False):
        """Yield ``(group_slice, band, key)``: ``band`` holds whole groups as rows
        (``whole=True``: one band, the full :meth:`split` layout)."""
        if whole:
            yield slice(0, self.n_groups), self.split(x), None
            return
        chunk = _blocks.CHUNK
        if self.kind == "tensor":
            flat = x.reshape(-1)
            if flat.size == 0:
                yield slice(0, 1), flat.reshape(1, 0), slice(0, 0)
            for c0 in range(0, flat.size, chunk):
                cs = slice(c0, min(flat.size, c0 + chunk))
                yield slice(0, 1), flat[cs].reshape(1, -1), cs
        elif self.kind in ("channel", "token", "block"):
            m2 = np.moveaxis(x, self.axis, -1).reshape(self.rows, self.n)
            if self.kind != "block":
                for rs in _blocks.row_chunks(self.rows, self.n):
                    yield rs, m2[rs], rs
                return
            k, nb = self.spec.block_size, self.nb
            for rs in _blocks.row_chunks(self.rows, nb * k):
                sub = m2[rs]
                if self.n != nb * k:
                    pad = np.zeros((sub.shape[0], nb * k), dtype=x.dtype)
                    pad[:, :self.n] = sub
                    sub = pad
                yield slice(rs.start * nb, rs.stop * nb), sub.reshape(-1, k), rs
        else:
            br, bc = self.spec.block_size
            nr, nc = self.tile_dims
            *_, r, c = self.shape
            x3 = x.reshape(self.lead, r, c)
            for lead in range(self.lead):
                for i in range(nr):
                    rsl = slice(i * br, min(r, (i + 1) * br))
                    pad = np.zeros((br, nc * bc), dtype=x.dtype)
                    pad[:rsl.stop - rsl.start, :c] = x3[lead, rsl, :]
                    band = pad.reshape(br, nc, bc).transpose(1, 0, 2).reshape(nc, br * bc)
                    g0 = (lead * nr + i) * nc
                    yield slice(g0, g0 + nc), band, (lead, rsl)

    def put(self, out: np.ndarray, key, vals: np.ndarray) -> None:
        """Write a band's results (rows = groups) into ``out`` from :meth:`new_out`."""
        if key is None:  # whole layout
            j = self.join(vals)
            out[...] = np.moveaxis(j, self.axis, -1) if self.axis is not None else j
        elif self.kind == "tensor":
            out.reshape(-1)[key] = vals.reshape(-1)
        elif self.kind in ("channel", "token"):
            out.reshape(self.rows, self.n)[key] = vals
        elif self.kind == "block":
            rows = key.stop - key.start
            out.reshape(self.rows, self.n)[key] = vals.reshape(rows, -1)[:, :self.n]
        else:
            br, bc = self.spec.block_size
            nr, nc = self.tile_dims
            *_, r, c = self.shape
            lead, rsl = key
            t = vals.reshape(nc, br, bc).transpose(1, 0, 2).reshape(br, nc * bc)
            out.reshape(self.lead, r, c)[lead, rsl, :] = t[:rsl.stop - rsl.start, :c]

    def scale_shape(self) -> tuple:
        """Shape of the per-group scales as stored in a QuantizedTensor."""
        if self.kind == "tensor":
            return ()
        if self.kind in ("channel", "token"):
            s = list(self.shape)
            s[self.axis] = 1
            return tuple(s)
        if self.kind == "block":
            s = list(self.moved_shape[:-1]) + [self.nb]
            return tuple(np.moveaxis(np.empty(s, dtype=np.int8), -1, self.axis).shape)
        *lead, _, _ = self.shape
        return (*lead, *self.tile_dims)

    def scales_out(self, per_group: np.ndarray) -> np.ndarray:
        if self.kind == "tensor":
            return per_group.reshape(())
        if self.kind in ("channel", "token"):
            return per_group.reshape(self.scale_shape())
        if self.kind == "block":
            s = per_group.reshape(tuple(self.moved_shape[:-1]) + (self.nb,))
            return np.moveaxis(s, -1, self.axis)
        return per_group.reshape(self.scale_shape())

    def scales_in(self, stored: np.ndarray) -> np.ndarray:
        """Per-group column (groups, 1) from stored scales."""
        if self.kind == "block":
            return np.moveaxis(stored, self.axis, -1).reshape(-1, 1)
        return np.asarray(stored).reshape(-1, 1)


# ---- clip values (calibration) ------------------------------------------------
def finite_abs(g: np.ndarray) -> np.ndarray:
    a = np.abs(g.astype(np.float64))
    return np.where(np.isfinite(a), a, 0.0)


def band_absmax(band: np.ndarray) -> np.ndarray:
    """Largest finite |value| of each row (0 for none), float64."""
    if band.shape[1] == 0:
        return np.zeros(band.shape[0])
    a = np.abs(band)
    a[~(a < np.inf)] = 0  # NaN and Inf never set a scale
    return a.max(axis=1).astype(np.float64)


def band_minmax(band: np.ndarray):
    """(min, max) of each row's finite values, widened to include 0, float64."""
    if band.shape[1] == 0:
        z = np.zeros(band.shape[0])
        return z, z.copy()
    fin = np.isfinite(band)
    lo = np.where(fin, band, 0).min(axis=1).astype(np.float64)
    hi = np.where(fin, band, 0).max(axis=1).astype(np.float64)
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0)


def finite_rows(g: np.ndarray):
    """Each row's finite values as float64 (an iterator)."""
    for row in g:
        yield row[np.isfinite(row)].astype(np.float64)
