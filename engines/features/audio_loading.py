"""Reading a reference clip from a WAV file the way the reference app sees it.

The reference loads clips with librosa: samples as float32 in [-1, 1), channels
averaged, then soxr "HQ" resampling and a length fix to ceil(n * ratio). The
prompt tokens are sensitive to the resampler (another one changed ~10 % of the
tokens), so the same steps are repeated here without librosa. Only WAV is read
(PCM 8/16/24/32-bit and IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE);
the stdlib `wave` module is not used because it rejects float files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from .errors import AudioFileError

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


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """A WAV file as mono float32 at `sample_rate` (soxr HQ), like `librosa.load(path, sr=...)`."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    audio, native_rate = read_wav_float(path)
    mono = audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0]
    return resample(mono, native_rate, sample_rate)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """soxr HQ resampling of mono float32 audio, length fixed to ceil(n * ratio) as librosa does."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if orig_rate == target_rate:
        return audio
    # Same float expression as librosa, so rounding of the length agrees too.
    n_out = int(np.ceil(audio.shape[-1] * (float(target_rate) / orig_rate)))
    out = np.asarray(soxr.resample(audio, orig_rate, target_rate, quality="HQ"), dtype=np.float32)
    if out.shape[0] > n_out:
        out = out[:n_out]
    elif out.shape[0] < n_out:
        out = np.pad(out, (0, n_out - out.shape[0]))
    return out


def read_wav_float(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float32 `[channels, frames]` and the native rate.

    Integer PCM is scaled by 2**-(bits-1) (8-bit is unsigned, centred at 128),
    matching libsndfile; float data is passed through unscaled. A data chunk
    that claims more bytes than the file holds is read as far as it goes,
    like libsndfile does.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot read audio file ({exc.strerror or exc})") from exc
    fmt, data = _parse_riff(path, blob)
    n_frames = len(data) // fmt.block_align
    if n_frames == 0:
        raise AudioFileError(f"{path}: the WAV file contains no audio frames")
    data = data[: n_frames * fmt.block_align]
    samples = _decode(fmt, data).reshape(n_frames, fmt.channels)
    return np.ascontiguousarray(samples.T), fmt.sample_rate


def _parse_riff(path: Path, blob: bytes) -> tuple[WavFormat, bytes]:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioFileError(f"{path}: not a WAV file (no RIFF/WAVE header)")
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
                raise AudioFileError(f"{path}: WAV data chunk comes before its fmt chunk")
            return fmt, body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise AudioFileError(f"{path}: WAV file has no fmt chunk")
    raise AudioFileError(f"{path}: WAV file has no data chunk")


def _parse_fmt(path: Path, body: bytes) -> WavFormat:
    if len(body) < 16:
        raise AudioFileError(f"{path}: WAV fmt chunk is truncated")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == FORMAT_EXTENSIBLE:
        if len(body) < 26:
            raise AudioFileError(f"{path}: WAVE_FORMAT_EXTENSIBLE fmt chunk is truncated")
        (tag,) = struct.unpack_from("<H", body, 24)  # first field of the sub-format GUID
    if tag not in (FORMAT_PCM, FORMAT_FLOAT):
        name = _FORMAT_NAMES.get(tag, f"format tag {tag:#06x}")
        raise AudioFileError(f"{path}: {name} WAV is not supported; use PCM or float WAV")
    supported_bits = (8, 16, 24, 32) if tag == FORMAT_PCM else (32, 64)
    if bits not in supported_bits:
        kind = "PCM" if tag == FORMAT_PCM else "float"
        raise AudioFileError(f"{path}: {bits}-bit {kind} WAV is not supported")
    if channels < 1 or rate < 1:
        raise AudioFileError(f"{path}: WAV header has {channels} channels at {rate} Hz")
    if block_align != channels * bits // 8:
        raise AudioFileError(
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


__all__ = ["AudioFileError", "WavFormat", "load_audio", "read_wav_float", "resample"]
