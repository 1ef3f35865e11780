"""Hostile inputs for the bad-input probes: YAML alias bombs, deeply nested documents, zip and
PNG decompression bombs. Each is small on the wire and large (or deep) once parsed."""

from __future__ import annotations

import bz2
import struct
import zlib

__all__ = [
    "alias_bomb_bot_yaml",
    "deep_json",
    "deep_yaml",
    "many_anchors_yaml",
    "png_bomb",
    "repeated_member_zip",
]


def alias_bomb_bot_yaml(levels: int = 9, width: int = 10) -> str:
    """A valid-looking bot definition whose response payload is a "billion laughs": ``levels``
    anchors each listing the previous ``width`` times (10^9 strings for the defaults, in
    about 600 bytes)."""
    lines = ['l0: &l0 "lol lol lol lol lol lol lol lol"']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    anchors = "\n".join("  " + line for line in lines)
    return (
        "name: laughing bot\n"
        "x-anchors:\n"
        f"{anchors}\n"
        "responses:\n"
        "  utter_greet:\n"
        "    - text: hi\n"
        f"      custom: {{payload: *l{levels}}}\n"
    )


def many_anchors_yaml(count: int = 10_000) -> str:
    """A bot definition with ``count`` anchors, each used once (``count`` aliases)."""
    anchors = "\n".join(f"  - &a{i} v{i}" for i in range(count))
    uses = ", ".join(f"*a{i}" for i in range(count))
    return (
        "name: anchored bot\n"
        "x-anchors:\n"
        f"{anchors}\n"
        "responses:\n"
        "  utter_greet:\n"
        "    - text: hi\n"
        f"      custom: {{payload: [{uses}]}}\n"
    )


def deep_json(depth: int, leaf: str = "1") -> str:
    """``depth`` nested JSON lists around ``leaf``."""
    return "[" * depth + leaf + "]" * depth


def deep_yaml(depth: int) -> str:
    """A YAML document (flow style) nested ``depth`` deep under a bot's ``custom`` payload."""
    return (
        "name: deep bot\n"
        "responses:\n"
        "  utter_greet:\n"
        "    - text: hi\n"
        f"      custom: {{payload: {'[' * depth}1{']' * depth}}}\n"
    )


def repeated_member_zip(
    data: bytes, count: int, *, name: str = "img/{i}.png", bzip2: bool = True
) -> bytes:
    """A zip of ``count`` members that all hold ``data`` (compressed once, written ``count``
    times: a many-small-files bomb is built in milliseconds)."""
    method = 12 if bzip2 else 8  # bzip2 or deflate
    packed = bz2.compress(data) if bzip2 else _raw_deflate(data)
    crc = zlib.crc32(data)
    version = 46 if bzip2 else 20
    local, central = bytearray(), bytearray()
    for i in range(count):
        filename = name.format(i=i).encode()
        offset = len(local)
        local += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            version,
            0,
            method,
            0,
            0x21,
            crc,
            len(packed),
            len(data),
            len(filename),
            0,
        )
        local += filename + packed
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            version,
            version,
            0,
            method,
            0,
            0x21,
            crc,
            len(packed),
            len(data),
            len(filename),
            0,
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        central += filename
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 100_000, height: int = 100_000, rows: int = 64) -> bytes:
    """An RGB PNG that declares ``width`` x ``height`` pixels (30 GB decoded for the default)
    and carries the zlib stream of only ``rows`` black rows: a few kilobytes on the wire."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes(3 * width)
    pixels = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )
