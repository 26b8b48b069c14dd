"""WAV files in and out: the one reader of the project, the 16-bit writer.

The official app turns float audio into int16 by `x * 32768` and truncation
toward zero; the same rule is used here, with clipping, so that a sample at
full scale (+1.0, which its peak rule produces) does not wrap around to
-32768 as the app's cast does, which would be a click.

`read_wav` reads what a technician may record a reference clip as: PCM
8/16/24/32-bit and IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE.
The stdlib `wave` module is not used for reading because it rejects float files.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 32000

FORMAT_PCM = 0x0001
FORMAT_FLOAT = 0x0003
FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM"}


@dataclass(frozen=True)
class WavFormat:
    """The fields of a `fmt ` chunk that decide how samples are decoded."""

    format_tag: int  # FORMAT_PCM or FORMAT_FLOAT (extensible files resolved)
    channels: int
    sample_rate: int
    bits: int
    block_align: int


class WavFileError(ValueError):
    """A file is not a WAV file this reader can decode."""


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16, truncating like the reference, never wrapping."""
    scaled = np.asarray(audio, dtype=np.float32) * 32768.0
    return np.clip(np.trunc(scaled), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as a 16-bit WAV; the file appears complete or not at all."""
    with WavStreamWriter(path, sample_rate) as out:
        out.write(audio)
    return Path(path)


class WavStreamWriter:
    """Append audio to a 16-bit WAV as it is produced; the file appears only when closed."""

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self._out = wave.open(str(self._tmp), "wb")  # noqa: SIM115 - closed in close()
        self._out.setnchannels(1)
        self._out.setsampwidth(2)
        self._out.setframerate(sample_rate)
        self.samples = 0

    def write(self, audio: np.ndarray) -> None:
        self._out.writeframes(float_to_pcm16(audio).tobytes())
        self.samples += int(np.asarray(audio).size)

    def close(self, keep: bool = True) -> None:
        self._out.close()
        if keep:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> WavStreamWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(keep=exc_type is None)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float32 `[channels, frames]` and the native rate (raises WavFileError).

    Integer PCM is scaled by 2**-(bits-1) (8-bit is unsigned, centred at 128),
    matching libsndfile; float data is passed through unscaled. A data chunk
    that claims more bytes than the file holds is read as far as it goes,
    like libsndfile does.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise WavFileError(f"{path}: cannot read audio file ({exc.strerror or exc})") from exc
    fmt, data = _parse_riff(path, blob)
    n_frames = len(data) // fmt.block_align
    if n_frames == 0:
        raise WavFileError(f"{path}: the WAV file contains no audio frames")
    data = data[: n_frames * fmt.block_align]
    samples = _decode(fmt, data).reshape(n_frames, fmt.channels)
    return np.ascontiguousarray(samples.T), fmt.sample_rate


def _parse_riff(path: Path, blob: bytes) -> tuple[WavFormat, bytes]:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavFileError(f"{path}: not a readable WAV file (not a WAV file: no RIFF/WAVE header)")
    fmt: WavFormat | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(path, body)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavFileError(f"{path}: WAV data chunk comes before its fmt chunk")
            return fmt, body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise WavFileError(f"{path}: WAV file has no fmt chunk")
    raise WavFileError(f"{path}: WAV file has no data chunk")


def _parse_fmt(path: Path, body: bytes) -> WavFormat:
    if len(body) < 16:
        raise WavFileError(f"{path}: WAV fmt chunk is truncated")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == FORMAT_EXTENSIBLE:
        if len(body) < 26:
            raise WavFileError(f"{path}: WAVE_FORMAT_EXTENSIBLE fmt chunk is truncated")
        (tag,) = struct.unpack_from("<H", body, 24)  # first field of the sub-format GUID
    if tag not in (FORMAT_PCM, FORMAT_FLOAT):
        name = _FORMAT_NAMES.get(tag, f"format tag {tag:#06x}")
        raise WavFileError(f"{path}: {name} WAV is not supported; use PCM or float WAV")
    supported_bits = (8, 16, 24, 32) if tag == FORMAT_PCM else (32, 64)
    if bits not in supported_bits:
        kind = "PCM" if tag == FORMAT_PCM else "float"
        raise WavFileError(f"{path}: {bits}-bit {kind} WAV is not supported")
    if channels < 1 or rate < 1:
        raise WavFileError(f"{path}: WAV header has {channels} channels at {rate} Hz")
    if block_align != channels * bits // 8:
        raise WavFileError(
            f"{path}: WAV block size {block_align} does not match {channels} x {bits}-bit samples"
        )
    return WavFormat(tag, channels, rate, bits, block_align)


def _decode(fmt: WavFormat, data: bytes) -> np.ndarray:
    """Interleaved sample bytes -> float32 values, scaled like libsndfile."""
    if fmt.format_tag == FORMAT_FLOAT:
        dtype = "<f4" if fmt.bits == 32 else "<f8"
        return np.frombuffer(data, dtype=dtype).astype(np.float32)
    if fmt.bits == 8:
        raw = np.frombuffer(data, dtype=np.uint8).astype(np.float32)
        return (raw - 128.0) / 128.0
    if fmt.bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        return ints.astype(np.float32) / np.float32(1 << 23)
    dtype = "<i2" if fmt.bits == 16 else "<i4"
    scale = np.float32(2.0 ** (fmt.bits - 1))
    return np.frombuffer(data, dtype=dtype).astype(np.float32) / scale
