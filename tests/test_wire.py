"""The parent's frame reader (``wire.FrameBuffer``) over a real pipe: every frame
comes out whole, once and in order, whatever sizes they have and however the
bytes are split across reads; end of file and an empty pipe are told apart."""

from __future__ import annotations

import os
import random

import pytest

from manycore._transport import wire


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    wire.enlarge_pipe(w)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def frame_bytes(payload: bytes) -> bytes:
    return b"".join(wire.frame(payload))


def read_all(buf: wire.FrameBuffer, fd: int) -> list[bytes]:
    """Every frame readable now (stops when the pipe is empty)."""
    got: list[bytes] = []
    while True:
        try:
            frames = buf.read(fd)
        except BlockingIOError:
            return got
        assert frames is not None, "end of file while the write end is open"
        got += [bytes(f) for f in frames]


def test_small_frames_in_one_write_come_out_in_order(pipe):
    r, w = pipe
    payloads = [b"", b"a", b"bc" * 10, bytes(range(256))]
    os.write(w, b"".join(frame_bytes(p) for p in payloads))
    assert read_all(wire.FrameBuffer(), r) == payloads


def test_frame_split_inside_its_header_and_body(pipe):
    r, w = pipe
    buf = wire.FrameBuffer(64)
    data = frame_bytes(b"x" * 40) + frame_bytes(b"y" * 30)
    pieces = [data[:3], data[3:9], data[9:30], data[30:52], data[52:]]
    got: list[bytes] = []
    for piece in pieces:
        os.write(w, piece)
        got += read_all(buf, r)
    assert got == [b"x" * 40, b"y" * 30]


@pytest.mark.parametrize("size", [56, 57, 63, 64, 65, 200, 5000])
def test_frame_near_and_past_the_buffer_size(pipe, size):
    """A 64-byte buffer: a frame that fits with its header is cut from it; a larger
    one gets a buffer of its own; the frames around it are not lost."""
    r, w = pipe
    buf = wire.FrameBuffer(64)
    big = os.urandom(size)
    os.write(w, frame_bytes(b"before") + frame_bytes(big) + frame_bytes(b"after"))
    assert read_all(buf, r) == [b"before", big, b"after"]


def test_large_frame_arriving_in_pieces(pipe):
    r, w = pipe
    buf = wire.FrameBuffer(1024)
    big = os.urandom(300_000)
    data = frame_bytes(big) + frame_bytes(b"next")
    got: list[bytes] = []
    for at in range(0, len(data), 7_777):
        os.write(w, data[at : at + 7_777])
        got += read_all(buf, r)
    assert got == [big, b"next"]


def test_random_frames_and_splits(pipe):
    r, w = pipe
    rng = random.Random(5)
    buf = wire.FrameBuffer(256)
    payloads = [rng.randbytes(rng.choice([0, 1, 7, 100, 248, 249, 300, 3000])) for _ in range(300)]
    data = b"".join(frame_bytes(p) for p in payloads)
    got: list[bytes] = []
    at = 0
    while at < len(data):
        step = rng.randint(1, 700)
        os.write(w, data[at : at + step])
        at += step
        got += read_all(buf, r)
    assert got == payloads


def test_end_of_file_after_the_last_frame(pipe):
    r, w = pipe
    buf = wire.FrameBuffer(64)
    os.write(w, frame_bytes(b"last"))
    os.close(w)
    assert buf.read(r) == [b"last"]
    assert buf.read(r) is None


def test_end_of_file_inside_a_large_frame(pipe):
    r, w = pipe
    buf = wire.FrameBuffer(64)
    os.write(w, frame_bytes(b"z" * 1000)[:500])
    assert read_all(buf, r) == []
    os.close(w)
    for _ in range(10):  # what was written, then the end
        frames = buf.read(r)
        if frames is None:
            break
        assert frames == []
    assert frames is None


def test_empty_pipe_raises_blocking(pipe):
    r, _ = pipe
    with pytest.raises(BlockingIOError):
        wire.FrameBuffer().read(r)


def test_large_frame_is_not_reused_by_later_reads(pipe):
    """A frame handed out keeps its bytes after the reader goes on."""
    r, w = pipe
    buf = wire.FrameBuffer(64)
    first, small = os.urandom(1000), os.urandom(20)
    os.write(w, frame_bytes(first) + frame_bytes(small))
    kept: list[bytes | bytearray] = []
    while len(kept) < 2:
        frames = buf.read(r)
        assert frames is not None
        kept += frames
    os.write(w, frame_bytes(b"\0" * 1000) + frame_bytes(b"\1" * 20))
    assert read_all(buf, r) == [b"\0" * 1000, b"\1" * 20]
    assert kept == [first, small]
