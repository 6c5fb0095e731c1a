"""Download an official dataset archive, verify it, and unpack it atomically into ``data_dir``.

Nothing here runs unless a config sets ``dataset.download=true``. The steps, each of which leaves
``data_dir`` untouched when it fails:

1. stream the archive from the official address into a private temp folder beside ``data_dir``,
   hashing it on the way; a checksum mismatch is an error that names the address;
2. unpack it inside that temp folder, refusing members that would land outside it (absolute
   paths, ``..``, links);
3. check the member folder that becomes the dataset's folder (and per-file checksums where the
   archive itself has none we can trust);
4. ``os.replace`` that folder onto ``data_dir`` (one rename on one file system), then remove the
   temp folder. A crash leaves at most a ``.<name>.download-*`` folder, never a half dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from weightsim.errors import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from.

    url: the official archive; md5: its checksum (None when the publisher's archive is not stable,
    then ``files_sha256`` must pin the content); member: the folder inside the archive that becomes
    ``data_dir``; files_sha256: {path relative to member: sha256} checked after unpacking.
    """

    name: str
    url: str
    md5: str | None
    member: str
    files_sha256: dict[str, str] = field(default_factory=dict)


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str | None, opener: Callable = urllib.request.urlopen) -> Path:
    """Stream ``url`` to ``dest`` (written as ``dest.part`` then renamed) and check its md5."""
    part = dest.with_name(dest.name + ".part")
    h = hashlib.md5()
    try:
        with opener(url) as resp, open(part, "wb") as f:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                h.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url} ({reason}): no internet here? Download it on a "
                        f"machine that has, unpack it, and point dataset.data_dir at the folder") from None
    if md5 is not None and h.hexdigest() != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: md5 {h.hexdigest()}, expected {md5} "
                        f"(corrupt or changed download): nothing was installed, try again")
    os.replace(part, dest)
    return dest


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def safe_extract(archive: Path, into: Path) -> None:
    """Unpack a .zip or .tar(.gz) into ``into``; refuse members that escape it or are links."""
    into = into.resolve()
    into.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if not _inside(into, info.filename) or (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DataError(f"archive {archive.name} has an unsafe member {info.filename!r}: refused")
                z.extractall(into)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = t.getmembers()
                for m in members:
                    if not _inside(into, m.name) or not (m.isfile() or m.isdir()):
                        raise DataError(f"archive {archive.name} has an unsafe member {m.name!r}: refused")
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own guard too
                    t.extractall(into, members=members, filter="data")
                else:
                    t.extractall(into, members=members)
        else:
            raise DataError(f"downloaded file {archive.name} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"archive {archive.name} is corrupt ({e}): nothing was installed") from None


def install(source: Source, data_dir: str | Path, opener: Callable = urllib.request.urlopen) -> Path:
    """Download ``source`` and make its member folder ``data_dir``, atomically.

    An existing non-empty ``data_dir`` is never overwritten (it may hold the user's files): the
    error says to move it away first.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataError(f"{source.name}: {data_dir} exists but is incomplete; move it away, then rerun "
                        f"with dataset.download=true (or unpack {source.url} there by hand)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.download-", dir=data_dir.parent))
    try:
        archive = fetch(source.url, tmp / Path(source.url.split("?")[0]).name, source.md5, opener)
        safe_extract(archive, tmp / "x")
        archive.unlink()
        src = tmp / "x" / source.member
        if not src.is_dir():
            raise DataError(f"archive {source.url} has no folder {source.member}/: not the expected archive")
        for rel, digest in source.files_sha256.items():
            f = src / rel
            if not f.is_file():
                raise DataError(f"archive {source.url} lacks {source.member}/{rel}: nothing was installed")
            if file_digest(f) != digest:
                raise DataError(f"checksum mismatch for {source.member}/{rel} from {source.url}: "
                                f"nothing was installed")
        if data_dir.exists():
            data_dir.rmdir()  # empty (checked above)
        os.replace(src, data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_dir
