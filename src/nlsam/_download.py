"""Downloading with checksum verification, atomic writes and safe archive extraction, and the
errors of a failed download, for datasets (:mod:`nlsam.data`) and weights (:mod:`nlsam.models`)
alike. The errors are public as :class:`nlsam.data.DownloadError` and its kin."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Optional

from ._io import atomic_file

__all__ = [
    "ChecksumError",
    "DatasetNotFoundError",
    "DownloadError",
    "download_url",
    "file_md5",
    "safe_extract_tar",
    "weights_download_error",
]

_log = logging.getLogger("nlsam.data")

_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where it was looked for and how to get it."""


class DownloadError(RuntimeError):
    """A download failed (network error, HTTP error, or a corrupt file)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected MD5 checksum."""


def file_md5(path: Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    """The short reason of a download error, e.g. ``Temporary failure in name resolution`` for
    ``<urlopen error [Errno -3] Temporary failure in name resolution>``."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        return _reason(e.reason)
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def weights_download_error(name: str, where: str, exc: BaseException, hint: str) -> DownloadError:
    """The one-line error of weights that could not be downloaded: what, from where, why, and
    what to do (``hint``)."""
    return DownloadError(
        f"could not download the weights {name} from {where} ({_reason(exc)}); check the network connection; {hint}"
    )


def download_url(
    url: str, dest: Path, md5: Optional[str] = None, *, timeout: float = 60.0, hint: Optional[str] = None
) -> Path:
    """Download ``url`` to ``dest`` atomically and check its MD5.

    The data goes to a temporary file next to ``dest`` that is renamed onto ``dest`` only
    once it is complete and its checksum matches, so an interrupted or concurrent download
    never leaves a truncated file at ``dest``. Raises :class:`ChecksumError` on a checksum
    mismatch (the temporary file is deleted) and :class:`DownloadError` on network errors, with
    a one-line message: the URL, the reason and ``hint`` (default: how to save the file by hand).
    """
    dest = Path(dest)
    h = hashlib.md5(usedforsecurity=False)
    start = time.monotonic()
    with atomic_file(dest, suffix=".part") as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length") if resp.headers is not None else None
                _log.info("downloading %s (%s bytes) to %s", url, total or "?", dest)
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            if hint is None:
                hint = f"check the network connection, or download the file by other means and save it as {dest}"
            raise DownloadError(f"could not download {url} ({_reason(e)}); {hint}") from None
        digest = h.hexdigest()
        if md5 is not None and digest != md5.lower():
            raise ChecksumError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {digest}; the download is "
                "corrupt or incomplete and was deleted, run the command again"
            )
    _log.info("downloaded %s in %.1f s", dest.name, time.monotonic() - start)
    return dest


def _check_member_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise ValueError(f"refusing to extract unsafe path {name!r} (absolute or outside the target folder)")
    return p


def safe_extract_tar(archive: Path, dest: Path) -> None:
    """Extract a (compressed) tar archive into ``dest`` without path traversal.

    Only regular files and folders are extracted; links and device files are skipped.
    A member with an absolute path or a ``..`` component raises :class:`ValueError`
    before anything is written.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest_resolved = dest.resolve()
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise ValueError(f"{archive} is not a valid tar archive: {e}") from e
    with tar:
        members = tar.getmembers()
        for m in members:  # validate everything first
            _check_member_name(m.name)
        for m in members:
            rel = _check_member_name(m.name)
            target = dest.joinpath(*rel.parts) if rel.parts else dest
            if not target.resolve().is_relative_to(dest_resolved):
                raise ValueError(f"refusing to extract {m.name!r}: it resolves outside {dest}")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            else:
                _log.warning("skipping non-regular archive member %r in %s", m.name, archive)
