"""Reading a JPEG's markers without decoding it: whether libjpeg decodes it in one pass (then its
memory follows the draft-scaled output) and how many scans it has (each one a pass over the image)."""
from __future__ import annotations

# JPEG frames libjpeg decodes in one pass (baseline and extended sequential Huffman): with one
# interleaved first scan, its memory follows the draft-scaled output, not the header's size.
_SEQUENTIAL_SOF = frozenset({0xC0, 0xC1})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7: no length field
# libjpeg passes over the whole image once per scan, and a scan can be a dozen bytes: 40000 scans
# (600 KB, 4000 x 4000) took 16 s to decode. libjpeg's progressive script writes 10 scans.
MAX_JPEG_SCANS = 100


def one_pass_jpeg(fp) -> bool:
    """Whether libjpeg decodes this JPEG in one pass: a sequential Huffman frame whose first
    scan holds every component. Only then is its memory that of the draft-scaled output;
    progressive and multi-scan files buffer every coefficient of the full-size image."""
    position = fp.tell()
    try:
        fp.seek(0)
        if fp.read(2) != b"\xff\xd8":
            return False
        frame = components = None
        for _ in range(4096):  # segments before the first scan; more is not a real file
            marker = fp.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return False
            while marker[1] == 0xFF:  # fill bytes before a marker
                marker = b"\xff" + fp.read(1)
            if marker[1] in _STANDALONE_MARKERS:
                continue
            length = int.from_bytes(fp.read(2), "big")
            segment = fp.read(max(0, length - 2))
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC) and len(segment) > 5:
                frame, components = marker[1], segment[5]
            elif marker[1] == 0xDA:
                return frame in _SEQUENTIAL_SOF and bool(segment) and segment[0] == components
        return False
    finally:
        fp.seek(position)


def jpeg_scans(fp) -> int:
    """Start-of-scan markers: FF DA bytes (coded data stuffs FF bytes: never an undercount)."""
    position = fp.tell()
    try:
        fp.seek(0)
        return fp.read().count(b"\xff\xda")
    finally:
        fp.seek(position)
