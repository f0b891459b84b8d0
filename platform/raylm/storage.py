"""Paths every node sees: local paths (a shared mount) and URIs (``s3://``, ``gs://``) alike.

``output_dir`` and ``data.shards_dir`` may be either. A *location* here is a ``str`` (or a
:class:`~pathlib.Path`): a URI with a scheme (``s3://bucket/prefix``), or a local path. The
helpers resolve it to a :class:`pyarrow.fs.FileSystem` and a path on it with
``FileSystem.from_uri``, the same way Ray Train does for its ``storage_path``, so they reach
the same storage with the same configuration: the standard ``AWS_*`` variables (credentials,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible server) or
``GOOGLE_APPLICATION_CREDENTIALS``. Local paths behave exactly as plain files and directories.

Object stores have no rename, so whatever must look complete only once it is (a token
dataset's manifest, an exported model's config) is uploaded last (:func:`upload_dir`).
Storage problems surface as :class:`~raylm.errors.UserError` through :func:`errors` and
:func:`check_writable`, naming the location and what to check.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from raylm.errors import UserError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URI_SCHEMES = {"s3": "s3", "gcs": "gs"}  # pyarrow's filesystem type name -> the URI scheme users write


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names remote storage (``s3://...``); ``file://`` URIs count as local paths."""
    match = _SCHEME.match(str(location))
    return bool(match) and match.group(1).lower() != "file"


def absolute(location: str | Path) -> str:
    """``location`` as a string every process can use: a URI as it is (no trailing ``/``), a local path
    made absolute (workers run in their own working directories)."""
    text = str(location)
    if is_uri(text):
        return text.rstrip("/")
    if _SCHEME.match(text):  # file:///path
        text = text.split("://", 1)[1]
    return str(Path(text).expanduser().resolve())


def location(location: str | Path) -> Path | str:
    """A :class:`~pathlib.Path` for a local path, the URI string itself otherwise."""
    return str(location) if is_uri(location) else Path(location)


def join(location: str | Path, *parts: str) -> str:
    """``location/part/...`` (``Path`` joining for local paths, ``/`` for URIs)."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])


def resolve(location: str | Path):
    """``(pyarrow filesystem, path on it)`` for ``location``; an unknown scheme is a :class:`UserError`."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), absolute(location)
    try:
        return pafs.FileSystem.from_uri(str(location))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise UserError(f"cannot use {location}: {exc}; use an s3:// or gs:// URI, or a local path (a mount "
                        "every node sees)") from None


def to_uri(filesystem, path: str) -> str:
    """The location of ``path`` on ``filesystem`` (what Ray Train's ``Checkpoint.path`` lacks: the scheme)."""
    scheme = _URI_SCHEMES.get(filesystem.type_name, filesystem.type_name)
    return path if scheme == "local" else f"{scheme}://{path.lstrip('/')}"


def hint(location: str | Path) -> str:
    """What to check when ``location`` cannot be reached."""
    scheme = _SCHEME.match(str(location))
    scheme = scheme.group(1).lower() if scheme else "file"
    if scheme in ("s3", "s3a"):
        return ("check that the bucket exists and that the AWS credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or a profile), AWS_REGION and, for an S3-compatible server, AWS_ENDPOINT_URL "
                "are set, on the Ray workers too (see docs/storage.md)")
    if scheme in ("gs", "gcs"):
        return ("check that the bucket exists and that GOOGLE_APPLICATION_CREDENTIALS names a service-account key, "
                "on the Ray workers too (see docs/storage.md)")
    if scheme == "file":
        return "check that the path exists and is writable"
    return "check the URI and the credentials of its storage (see docs/storage.md)"


@contextlib.contextmanager
def errors(location: str | Path, action: str) -> Iterator[None]:
    """Turn a storage failure inside the block into a :class:`UserError`: "cannot ``action`` ``location``"."""
    import pyarrow as pa

    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"cannot {action} {location}: {exc}; {hint(location)}") from None


def _info(location: str | Path):
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path)


def exists(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return _info(location).type == pafs.FileType.File


def is_dir(location: str | Path) -> bool:
    """A directory, or on an object store a prefix that holds objects."""
    import pyarrow.fs as pafs

    return _info(location).type == pafs.FileType.Directory


def read_bytes(location: str | Path) -> bytes:
    filesystem, path = resolve(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str | Path) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a file (creating local parent directories; an object store needs none)."""
    filesystem, path = resolve(location)
    if filesystem.type_name == "local":
        filesystem.create_dir(os.path.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def write_text(location: str | Path, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def delete_file(location: str | Path) -> None:
    """Delete a file; nothing happens when there is none."""
    if is_file(location):
        filesystem, path = resolve(location)
        filesystem.delete_file(path)


def delete_dir(location: str | Path) -> None:
    """Delete a directory (every object under a prefix) and what it holds; nothing happens when there is none.
    A bucket itself is never deleted."""
    filesystem, path = resolve(location)
    if filesystem.type_name != "local" and "/" not in path.strip("/"):
        raise ValueError(f"refusing to delete the whole bucket {location}")
    if is_dir(location):
        filesystem.delete_dir(path)


def list_dirs(location: str | Path, pattern: str = "*") -> list[str]:
    """Names of the subdirectories of ``location`` matching ``pattern`` (a glob), sorted; [] when it is absent."""
    import pyarrow.fs as pafs

    filesystem, path = resolve(location)
    entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(e.base_name for e in entries
                  if e.type == pafs.FileType.Directory and fnmatch.fnmatchcase(e.base_name, pattern))


def upload_dir(local: str | Path, destination: str | Path, last: Iterable[str] = ()) -> None:
    """Copy the local directory ``local`` to ``destination``, file by file; the files named in ``last``
    (relative paths) go after all the others, so their presence means the rest is there."""
    import pyarrow.fs as pafs

    filesystem, target = resolve(destination)
    local = Path(local)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    last = [name for name in last if name in files]
    source = pafs.LocalFileSystem()
    for name in [f for f in files if f not in last] + last:
        if filesystem.type_name == "local":
            filesystem.create_dir(os.path.dirname(f"{target}/{name}"), recursive=True)
        pafs.copy_files(str((local / name).resolve()), f"{target}/{name}", source_filesystem=source,
                        destination_filesystem=filesystem)


def download_dir(source: str | Path, local: str | Path) -> Path:
    """Copy the directory ``source`` into the local directory ``local`` (created); returns ``local``."""
    import pyarrow.fs as pafs

    filesystem, path = resolve(source)
    local = Path(local).resolve()
    local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    return local


def check_writable(location: str | Path, what: str) -> None:
    """Write and delete a small probe file under ``location``: a missing bucket, wrong credentials or an
    unreachable endpoint become a :class:`UserError` naming ``what`` (``output_dir``) before work starts."""
    probe = join(location, f".raylm-write-probe-{uuid.uuid4().hex[:12]}")
    with errors(location, f"write to {what}"):
        write_text(probe, "raylm write probe\n")
        delete_file(probe)
