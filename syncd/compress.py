"""zstd for bodies between peers (docs/protocol.md, "Compression"): used only when it
pays, since chunks of media and archives do not shrink and hashing them is cost enough."""

from __future__ import annotations

import zstandard

MIN_SIZE = 512  # below this a frame's overhead eats the gain
PROBE = 64 * 1024  # a first slice tells incompressible data cheaply
WORTH = 0.9  # compressed must be at most this fraction of the original
LEVEL = 3
# Large bodies are packed and unpacked on worker threads, and zstandard's (de)compressor
# objects are not thread-safe: each call makes its own (~10 us).


class BadEncoding(ValueError):
    """A zstd body that is corrupt or would decompress beyond the limit."""


def pack(data: bytes) -> bytes | None:
    """The zstd frame of `data`, or None when compressing does not pay."""
    if len(data) < MIN_SIZE:
        return None
    compressor = zstandard.ZstdCompressor(level=LEVEL)
    if len(data) > PROBE and len(compressor.compress(data[:PROBE])) > WORTH * PROBE:
        return None
    packed = compressor.compress(data)
    return packed if len(packed) <= WORTH * len(data) else None


def unpack(data: bytes, limit: int) -> bytes:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise BadEncoding(f"not a zstd body: {e}") from None
    if size > limit:
        raise BadEncoding(f"zstd body would be {size} bytes, over the limit of {limit}")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=limit)
    except zstandard.ZstdError as e:
        # zstandard says the same when the output would pass max_output_size
        raise BadEncoding(f"zstd body corrupt or over the limit of {limit} bytes: {e}"
                          ) from None
    if len(out) > limit:
        raise BadEncoding(f"zstd body over the limit of {limit} bytes")
    return out
