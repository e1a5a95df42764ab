"""Whether a TIFF's pages form the stack its series claims: refuse files whose pages
differ in shape or type, or whose ImageJ metadata counts fewer images than there are pages
(tifffile would open them with pages dropped or shifted)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import tifffile

from ._errors import CorruptVolumeError, MetadataError

# What tifffile and its codecs raise on files they cannot parse or decode.
TIFF_ERRORS = (
    tifffile.TiffFileError,
    ValueError,
    RuntimeError,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    struct.error,
    zlib.error,
)


def read_series(path: Path, tif: tifffile.TiffFile) -> list[tifffile.TiffPageSeries]:
    """The file's series; pages that tifffile cannot fit into one (a page whose width differs
    from the first page's in a file it takes for a uniform stack) are a MetadataError."""
    try:
        return list(tif.series)
    except TIFF_ERRORS as exc:
        if "incompatible keyframe" in str(exc):
            raise MetadataError(
                f"{path}: pages do not share one shape ({_page_groups(tif)}); voxflow-io reads "
                f"a TIFF stack only when every page has the same shape and type"
            ) from exc
        raise CorruptVolumeError(f"{path}: damaged TIFF: {exc}") from exc


def check_one_stack(
    path: Path, tif: tifffile.TiffFile, series: list[tifffile.TiffPageSeries]
) -> None:
    """Refuse files without shape metadata whose pages differ in shape, type or layout.

    tifffile groups such pages into one "generic" series per kind of page, so that a stack
    with one odd page would open without it and with every later page shifted in z.
    """
    generic = [s for s in series if s.kind == "generic"]
    if len(generic) > 1:
        raise MetadataError(
            f"{path}: pages do not share one shape, type and layout ({_page_groups(tif)}); "
            f"without shape metadata they cannot be told apart from one stack with pages "
            f"missing, so voxflow-io refuses the file: split it into one file per stack"
        )


# Tags that fix a page's decoded shape and type: width, length, bits per sample,
# compression, samples per pixel, tile width and length, sample format.
_SHAPE_TAGS = frozenset({256, 257, 258, 259, 277, 322, 323, 339})


def check_pages_match_keyframe(
    path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries
) -> None:
    """Every page of a "uniform" series must have the first page's shape and type.

    For files without shape metadata tifffile compares only pages 1, 7 and -1 with page 0,
    and the other pages only by width: a page of another height or sample type would be
    cut, padded or reinterpreted. Reading the few shape tags of each IFD (with tifffile's
    tag parser) costs a small read per page instead of parsing every page whole.
    """
    if series.kind != "uniform" or len(series) < 2:
        return
    keyframe = series.keyframe
    reference_raw = _shape_entries(tif, keyframe.offset)
    reference = _decode_entries(tif, reference_raw)
    inline = {code: header[2:] for code, (_, header) in reference_raw.items()}
    for page in series:
        if page is None:
            raise CorruptVolumeError(f"{path}: a page of the stack cannot be read")
        raw = _shape_entries(tif, page.offset)
        if {code: header[2:] for code, (_, header) in raw.items()} == inline:
            continue  # same type, count and inline value: same shape (the common case)
        found = _decode_entries(tif, raw)
        if found == reference:
            continue  # equal values stored out of line at other offsets
        differing = {
            f"{tifffile.TIFF.TAGS.get(code, str(code))} ({code})": (
                reference.get(code),
                found.get(code),
            )
            for code in sorted(set(found) | set(reference))
            if found.get(code) != reference.get(code)
        }
        raise MetadataError(
            f"{path}: page {page.index} differs from page {keyframe.index} "
            f"({keyframe.shape} {keyframe.dtype}) in {differing} (page {keyframe.index} value, "
            f"page {page.index} value): pages do not share one shape; voxflow-io reads a TIFF "
            f"stack only when every page has the same shape and type"
        )


def _shape_entries(tif: tifffile.TiffFile, offset: int) -> dict[int, tuple[int, bytes]]:
    """Raw IFD entries (entry offset, entry bytes) of the shape tags of the IFD at ``offset``."""
    tiff = tif.tiff
    handle = tif.filehandle
    handle.seek(offset)
    count = struct.unpack(tiff.tagnoformat, handle.read(tiff.tagnosize))[0]
    entries = handle.read(tiff.tagsize * count)
    code_format = tiff.tagformat1[:2]
    found: dict[int, tuple[int, bytes]] = {}
    for index in range(count):
        header = entries[index * tiff.tagsize : (index + 1) * tiff.tagsize]
        code = struct.unpack(code_format, header[:2])[0]
        if code in _SHAPE_TAGS:
            found[code] = (offset + tiff.tagnosize + index * tiff.tagsize, header)
    return found


def _decode_entries(
    tif: tifffile.TiffFile, entries: dict[int, tuple[int, bytes]]
) -> dict[int, Any]:
    """Tag values of raw IFD entries, decoded by tifffile's tag parser."""
    return {
        code: tifffile.TiffTag.fromfile(tif, offset=offset, header=header).value
        for code, (offset, header) in entries.items()
    }


def check_imagej_page_count(
    path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries
) -> None:
    """An ImageJ hyperstack whose metadata counts fewer images than the file has pages would
    open without the extra pages (tifffile trusts the metadata)."""
    if series.kind != "imagej" or not tif.pages.is_multipage:
        return
    keyframe = series.keyframe
    images = series.size // max(keyframe.size, 1)
    pages = len(tif.pages)
    if images != pages:
        meta = tif.imagej_metadata or {}
        counts = {k: meta[k] for k in ("images", "frames", "slices", "channels") if k in meta}
        raise MetadataError(
            f"{path}: ImageJ metadata {counts} describes {images} images (shape {series.shape}, "
            f"axes {series.axes!r}) but the file has {pages} pages; the hyperstack would open "
            f"without {abs(pages - images)} of them. Fix the ImageJ metadata or re-save the file"
        )


def _page_groups(tif: tifffile.TiffFile) -> str:
    """Pages grouped by shape and dtype, e.g. "pages 0-1, 3-4: (8, 8) uint8; page 2: ..."."""
    groups: dict[str, list[int]] = {}
    pages = tif.pages
    pages.useframes = False
    for index in range(len(pages)):
        try:
            page = pages[index]
            key = f"{page.shape} {page.dtype} (compression {int(page.compression)})"
        except TIFF_ERRORS as exc:
            key = f"unreadable ({exc})"
        groups.setdefault(key, []).append(index)
    parts = []
    for key, indices in groups.items():
        runs: list[list[int]] = []
        for index in indices:
            if runs and index == runs[-1][-1] + 1:
                runs[-1].append(index)
            else:
                runs.append([index])
        shown = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:6]]
        label = "page" if len(indices) == 1 else "pages"
        parts.append(f"{label} {', '.join(shown)}{', ...' if len(runs) > 6 else ''}: {key}")
    return "; ".join(parts)
