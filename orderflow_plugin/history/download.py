"""Download archive zips, verified against their ``.CHECKSUM``, resumable, never half-written.

For each zip, ``NAME.zip.CHECKSUM`` is asked first (a few bytes). A verified copy whose checksum
is unchanged upstream is kept and never fetched again; one whose checksum changed (Binance
replaced the archive) is fetched again. A download goes to ``NAME.zip.part`` and an interrupted
one continues from its size with ``Range: bytes=N-``; the part becomes ``NAME.zip`` (rename) only
once its SHA-256 matches, and the checksum is written after it, so a kill at any moment leaves
either a verified pair or something the next run ignores or resumes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .plan import ArchiveFile, HistoryError

__all__ = ["Downloaded", "Downloader"]

_CHECKSUM = re.compile(r"([0-9a-fA-F]{64})\s+\*?(\S+)\s*")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Downloaded:
    """A verified zip on disk (``path``), its SHA-256, and whether it was fetched by this run."""

    file: ArchiveFile
    path: Path
    sha256: str
    fetched: bool


class Downloader:
    """Fetch archive zips from ``archive_url`` into ``folder``, ``retries`` more tries per request."""

    def __init__(self, archive_url: str, folder: Path, client: httpx.AsyncClient, *, retries: int = 4,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.archive_url = archive_url.rstrip("/")
        self.folder = folder
        self.client = client
        self.retries = retries
        self.on_bytes = on_bytes or (lambda n: None)

    async def get(self, file: ArchiveFile) -> Downloaded | None:
        """The verified zip of ``file``, or None when the archive does not have it (404)."""
        url = f"{self.archive_url}/{file.path}"
        for attempt in (1, 2):  # a mismatch is checked once more: the checksum or the zip may have just changed
            expected = await self._checksum(url + ".CHECKSUM", file)
            if expected is None:
                return None
            target = self.folder / file.name
            kept = _read_text(target.with_name(file.name + ".CHECKSUM"))
            if kept == expected and target.exists():
                return Downloaded(file, target, expected, fetched=False)
            part = target.with_name(file.name + ".part")
            part_of = part.with_name(part.name + ".CHECKSUM")
            if _read_text(part_of) != expected:  # a part of another version is no use
                _remove(part)
                _write_atomic(part_of, expected)
            if not await self._download(url, part, file):
                return None
            actual = _sha256(part)
            if actual == expected:
                _replace(part, target)
                _write_atomic(target.with_name(file.name + ".CHECKSUM"), expected)
                _remove(part_of)
                return Downloaded(file, target, expected, fetched=True)
            _remove(part)
            if attempt == 2:
                raise HistoryError(f"{file.name}: checksum mismatch: {url}.CHECKSUM says {expected}, the "
                                   f"downloaded file hashes to {actual} (twice); nothing was kept")
        raise AssertionError("unreachable")

    async def _checksum(self, url: str, file: ArchiveFile) -> str | None:
        response = await self._request(url, file, None)
        if response is None:
            return None
        text = response.content.decode("ascii", "replace")
        match = _CHECKSUM.fullmatch(text)
        if not match or match.group(2) != file.name:
            raise HistoryError(f"{file.name}: {url} is not '<sha256>  {file.name}': {text[:100]!r}")
        return match.group(1).lower()

    async def _request(self, url: str, file: ArchiveFile, part: Path | None) -> httpx.Response | None:
        """GET ``url`` (into ``part`` when given, resuming), retrying 5xx and transport errors; None on 404."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
            offset = part.stat().st_size if part is not None and part.exists() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                async with self.client.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status == 404:
                        return None
                    if status == 416 and part is not None:  # the part is already whole
                        return response
                    if status >= 500 or status == 429:
                        problem = f"HTTP {status}"
                        continue
                    if status not in (200, 206):
                        raise HistoryError(f"{file.name}: {url} answered HTTP {status}")
                    if part is None:
                        await response.aread()
                        return response
                    await self._save(response, part, append=status == 206)
                    return response
            except httpx.TransportError as exc:  # refused, reset, timed out, or a body cut short
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        got = part.stat().st_size if part is not None and part.exists() else 0
        where = f" ({got} bytes of it kept for the next run)" if got else ""
        raise HistoryError(f"{file.name}: {url} failed {self.retries + 1} times, last: {problem}{where}")

    async def _save(self, response: httpx.Response, part: Path, *, append: bool) -> None:
        try:
            with part.open("ab" if append else "wb") as out:
                async for chunk in response.aiter_raw():  # no chunk size: a cut body keeps what came
                    out.write(chunk)
                    self.on_bytes(len(chunk))
        except OSError as exc:
            raise _disk_error(exc, part) from exc

    async def _download(self, url: str, part: Path, file: ArchiveFile) -> bool:
        response = await self._request(url, file, part)
        if response is None:
            raise HistoryError(f"{file.name}: {url} is missing (404) though its .CHECKSUM is published")
        return True


def _disk_error(exc: OSError, path: Path) -> HistoryError:
    if exc.errno == errno.ENOSPC:
        return HistoryError(f"no space left on the device writing {path}; free some and run again (it resumes)")
    return HistoryError(f"cannot write {path}: {exc.strerror or exc}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise _disk_error(exc, path) from exc


def _replace(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        raise _disk_error(exc, target) from exc


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
