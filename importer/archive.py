"""Open an export given as a directory, a .zip or a .tar.gz, and read its files one at a time within limits."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
import zlib
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from events.mids import ARCHETYPES_FILE
from importer.errors import ImportInputError
from importer.limits import DEFAULT_LIMITS, ReadLimits
from importer.listing import Digests, FileListing

_CHUNK: Final = 1024 * 1024
HASH_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
_DRIVE = re.compile(r"^[A-Za-z]:")


class Export(ABC):
    """An opened export: its files by relative POSIX path, each read through a metered stream."""

    def __init__(self, name: str, limits: ReadLimits) -> None:
        self.name = name
        self.limits = limits
        self._digests: Digests | None = None  # made with the first digest: the listing comes after this
        self._total_read = 0
        self._finishing = threading.Lock()  # files may be hashed on several threads (hash_all)

    @property
    @abstractmethod
    def files(self) -> FileListing:
        """Every regular file's relative path and declared size, in sorted path order."""

    @property
    @abstractmethod
    def dirs(self) -> frozenset[str]:
        """Every directory's relative path (without a trailing slash)."""

    @abstractmethod
    def _open_raw(self, rel: str) -> IO[bytes]: ...

    def open(self, rel: str) -> MeteredReader:
        """A stream over one file that enforces the size limits and hashes the bytes on a first full read."""
        size = self.files[rel]
        if size > self.limits.max_file_bytes:
            raise _too_big(rel, self.limits)
        return MeteredReader(self, rel, self._open_raw(rel))

    @property
    def digests(self) -> Mapping[str, bytes]:
        """SHA-256 of the raw bytes of every file read to the end so far, in sorted path order."""
        return self._digest_table()

    def _digest_table(self) -> Digests:
        if self._digests is None:
            self._digests = Digests(self.files)
        return self._digests

    def content_hash(self) -> str:
        """SHA-256 over `path NUL sha256(bytes) LF` of every file read, in sorted path order."""
        h = hashlib.sha256()
        digests = self.digests
        for rel in digests:
            # A name that is not UTF-8 (its stray bytes kept as lone surrogates) counts as its own bytes.
            h.update(f"{rel}\0{digests[rel].hex()}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    @abstractmethod
    def close(self) -> None:
        """Release the archive and any temporary directory."""

    def __enter__(self) -> Export:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def hash_all(self, rels: Sequence[str], threads: int = HASH_THREADS) -> None:
        """Read to their ends, for their digests, the files of `rels` that are listed and not read yet, on
        `threads` threads (hashlib and the reads let go of the interpreter lock: a core each); the first
        error stops them and is raised."""
        # Positions, not names, are shared by the threads: a range's iterator may be (a generator may not),
        # and each name is made when its file is taken rather than tens of thousands at once.
        todo = iter(range(len(rels)))
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for i in todo:
                    if errors:
                        return
                    rel = rels[i]
                    if rel not in self.files or rel in self.digests:
                        continue
                    with self.open(rel) as f:
                        while f.read(_CHUNK):
                            pass
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, name=f"powerlog-hash-{i}") for i in range(threads - 1)]
        for t in workers:
            t.start()
        work()
        for t in workers:
            t.join()
        if errors:
            raise errors[0]

    def _finished(self, rel: str, count: int, digest: bytes) -> None:
        with self._finishing:
            if self._digest_table().add(rel, digest):
                self._total_read += count
                if self._total_read > self.limits.max_total_bytes:  # files read side by side
                    raise _too_much(rel, self.limits)


class MeteredReader:
    """A binary stream that counts the bytes really read (not declared) and refuses past the limits."""

    def __init__(self, export: Export, rel: str, raw: IO[bytes]) -> None:
        self._export = export
        self._rel = rel
        self._raw = raw
        self._count = 0
        self._hash = hashlib.sha256()
        # Only a file's first full read counts towards the total: streaming parses read a file twice.
        self._first = rel not in export.digests

    def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all when negative)."""
        if size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        try:
            data = self._raw.read(size)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
            raise ImportInputError(self._rel, f"in {self._export.name}", f"a readable file ({exc})") from exc
        if data:
            self._count += len(data)
            limits = self._export.limits
            if self._count > limits.max_file_bytes:
                raise _too_big(self._rel, limits)
            if self._first:
                if self._export._total_read + self._count > limits.max_total_bytes:
                    raise _too_much(self._rel, limits)
                self._hash.update(data)
        elif size and self._first:
            self._export._finished(self._rel, self._count, self._hash.digest())
        return data

    def close(self) -> None:
        """Close the underlying stream."""
        self._raw.close()

    def __enter__(self) -> MeteredReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_export(path: str | os.PathLike[str], limits: ReadLimits = DEFAULT_LIMITS) -> Export:
    """Open a directory, .zip or .tar.gz/.tgz export; a tar is extracted into a temporary directory first."""
    p = Path(path)
    name = str(p)
    if not os.path.lexists(p):
        raise ImportInputError(name, "", "an existing export directory or archive; nothing is there")
    if p.is_dir():
        return DirectoryExport(p, name, limits)
    if not p.is_file():
        raise ImportInputError(name, "", "a directory, a .zip or a .tar.gz of an export")
    with open(p, "rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ZipExport(p, name, limits)
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")) or head[257:262] == b"ustar":
        return _extract_tar(p, name, limits)
    raise ImportInputError(name, "", "a directory, a .zip or a .tar.gz of an export (not an archive)")


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether an entry is a directory or a link to one (as os.walk sorts them); a broken link is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


class DirectoryExport(Export):
    """An export on disk; links are followed only when they stay inside it, directory links never."""

    def __init__(self, root: Path, name: str, limits: ReadLimits, cleanup: Path | None = None) -> None:
        super().__init__(name, limits)
        self._root = root
        self._real_root = os.path.realpath(root)
        self._cleanup = cleanup
        try:
            self._files, self._dirs = self._scan()
        except BaseException:
            self.close()
            raise

    @property
    def files(self) -> FileListing:
        return self._files

    @property
    def dirs(self) -> frozenset[str]:
        return self._dirs

    def _scan(self) -> tuple[FileListing, frozenset[str]]:
        # One directory at a time through os.scandir, each name made once from its directory's: os.walk's
        # lists and a relpath a file made and dropped some 10 MB at 40,804 files, which the process kept.
        names: list[str] = []
        sizes = array("q")
        dirs: set[str] = set()
        pending = [""]
        while pending:
            folder = pending.pop()
            try:
                entries = os.scandir(os.path.join(self._root, folder))
            except OSError as exc:
                raise ImportInputError(folder or ".", "", f"a readable directory ({exc.strerror})") from exc
            with entries:
                for entry in entries:
                    rel = f"{folder}/{entry.name}" if folder else entry.name
                    if _is_dir(entry):
                        if entry.is_symlink():
                            self._inside(entry.path)  # a link to a directory is not followed
                        else:
                            dirs.add(rel)
                            pending.append(rel)
                        continue
                    if entry.is_symlink():
                        self._inside(entry.path)
                    try:
                        st = entry.stat()
                    except OSError as exc:
                        raise ImportInputError(rel, "", f"a readable file ({exc.strerror})") from exc
                    if not stat.S_ISREG(st.st_mode):
                        if rel.endswith(".json"):
                            raise ImportInputError(rel, "", "a regular file")
                        continue
                    names.append(rel)
                    sizes.append(st.st_size)
                    if len(names) > self.limits.max_files:
                        raise ImportInputError(self.name, "", _too_many(self.limits))
        return FileListing.of(names, sizes), frozenset(dirs)

    def _rel(self, full: str) -> str:
        return os.path.relpath(full, self._root).replace(os.sep, "/")

    def _inside(self, full: str) -> str:
        real = os.path.realpath(full)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise ImportInputError(
                self._rel(full), "", f"a link to somewhere inside the export; it points outside, to {real}"
            )
        return real

    def _open_raw(self, rel: str) -> IO[bytes]:
        # Checked again at open time: the tree may have changed since it was listed.
        real = self._inside(os.path.join(self._root, rel))
        try:
            f = open(real, "rb")  # noqa: SIM115 - the MeteredReader owns and closes it
        except OSError as exc:
            raise ImportInputError(rel, "", f"a readable file ({exc.strerror})") from exc
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise ImportInputError(rel, "", "a regular file")
        return f

    def close(self) -> None:
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None


class ZipExport(Export):
    """A .zip export, read member by member straight from the archive."""

    def __init__(self, path: Path, name: str, limits: ReadLimits) -> None:
        super().__init__(name, limits)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ImportInputError(name, "", f"a readable zip archive ({exc})") from exc
        try:
            self._members, self._dirs = self._scan()
        except BaseException:
            self._zip.close()
            raise
        self._sizes = FileListing((rel, info.file_size) for rel, info in self._members.items())

    @property
    def files(self) -> FileListing:
        return self._sizes

    @property
    def dirs(self) -> frozenset[str]:
        return self._dirs

    def _scan(self) -> tuple[dict[str, zipfile.ZipInfo], frozenset[str]]:
        members: dict[str, zipfile.ZipInfo] = {}
        dirs: set[str] = set()
        for info in self._zip.infolist():
            rel = member_path(info.filename, self.name)
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if info.is_dir():
                dirs.add(rel)
                continue
            if stat.S_ISLNK(mode):
                raise ImportInputError(
                    info.filename, f"in {self.name}", "a regular file (links are refused in zips)"
                )
            if info.flag_bits & 0x1:
                raise ImportInputError(info.filename, f"in {self.name}", "an unencrypted member")
            if rel in members:
                raise ImportInputError(info.filename, f"in {self.name}", "member names that appear once")
            members[rel] = info
            if len(members) > self.limits.max_files:
                raise ImportInputError(self.name, "", _too_many(self.limits))
        prefix = single_root(members)
        if prefix:
            members = {rel[len(prefix) :]: info for rel, info in members.items()}
            dirs = {d[len(prefix) :] for d in dirs if d.startswith(prefix)}
        dirs.update(_parents(members))
        return members, frozenset(dirs)

    def _open_raw(self, rel: str) -> IO[bytes]:
        try:
            return self._zip.open(self._members[rel])
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError) as exc:
            raise ImportInputError(rel, f"in {self.name}", f"a readable zip member ({exc})") from exc

    def close(self) -> None:
        self._zip.close()


def member_path(name: str, archive: str) -> str | None:
    """The normalized relative path of an archive member; refuses names that could leave the export."""
    if "\0" in name or "\\" in name:
        raise ImportInputError(name, f"in {archive}", "a member path without backslashes or NUL characters")
    if name.startswith("/") or _DRIVE.match(name):
        raise ImportInputError(name, f"in {archive}", "a relative member path, not an absolute one")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImportInputError(name, f"in {archive}", "a member path inside the export, without '..'")
    return "/".join(parts) or None


def single_root(paths: Iterable[str]) -> str:
    """`dir/` when the export sits in one top folder of the archive (no I12.json at the top), else ``""``."""
    tops = set()
    for rel in paths:
        if rel == ARCHETYPES_FILE:
            return ""
        top, sep, _ = rel.partition("/")
        tops.add(top + sep)
    if len(tops) == 1:
        (top,) = tops
        if top.endswith("/"):
            return top
    return ""


def _parents(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for rel in paths:
        parent = posixpath.dirname(rel)
        while parent and parent not in found:
            found.add(parent)
            parent = posixpath.dirname(parent)
    return found


def _extract_tar(path: Path, name: str, limits: ReadLimits) -> DirectoryExport:
    # A compressed tar has no index, so reading its files in our order means one pass to disk first.
    tmp = Path(tempfile.mkdtemp(prefix="powerlog-export-"))
    try:
        _extract_members(path, name, tmp, limits)
        root = tmp
        entries = os.listdir(tmp)
        if ARCHETYPES_FILE not in entries and len(entries) == 1 and (tmp / entries[0]).is_dir():
            root = tmp / entries[0]
        return DirectoryExport(root, name, limits, cleanup=tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract_members(path: Path, name: str, dest: Path, limits: ReadLimits) -> None:
    real_dest = os.path.realpath(dest)
    total = 0
    count = 0
    seen: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                rel = member_path(member.name, name)
                if rel is None:
                    continue
                if rel in seen and not member.isdir():
                    raise ImportInputError(member.name, f"in {name}", "member names that appear once")
                seen.add(rel)
                target = dest / rel
                parent = os.path.dirname(target)
                # Nothing is written through a link, so a link can never carry a later member outside.
                if os.path.realpath(parent) != os.path.join(real_dest, posixpath.dirname(rel)).rstrip("/"):
                    raise ImportInputError(
                        member.name, f"in {name}", "a member path that passes through no link"
                    )
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    continue
                count += 1
                if count > limits.max_files:
                    raise ImportInputError(name, "", _too_many(limits))
                os.makedirs(parent, exist_ok=True)
                if member.issym():
                    _extract_symlink(member, rel, target, real_dest, name)
                elif member.islnk():
                    source = member_path(member.linkname, name)
                    if source is None or source not in seen or not (dest / source).is_file():
                        raise ImportInputError(
                            member.name, f"in {name}", "a hard link to an earlier file inside the export"
                        )
                    with open(dest / source, "rb") as linked:
                        total += _copy_counted(linked, target, rel, total, limits)
                elif member.isreg():
                    if member.size > limits.max_file_bytes:
                        raise _too_big(rel, limits)
                    raw = tar.extractfile(member)
                    assert raw is not None  # a regular member always has data
                    with raw:
                        total += _copy_counted(raw, target, rel, total, limits)
                else:
                    raise ImportInputError(member.name, f"in {name}", "a regular file, directory or link")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ImportInputError(name, "", f"a readable .tar.gz archive ({exc})") from exc


def _extract_symlink(member: tarfile.TarInfo, rel: str, target: Path, real_dest: str, name: str) -> None:
    link = member.linkname
    escapes = link.startswith("/") or posixpath.normpath(
        posixpath.join(posixpath.dirname(rel), link)
    ).startswith("..")
    if not escapes:
        os.symlink(link, target)
        real = os.path.realpath(target)
        escapes = os.path.commonpath([real, real_dest]) != real_dest
        if escapes:
            os.unlink(target)
    if escapes:
        raise ImportInputError(
            member.name, f"in {name}", f"a link to somewhere inside the export, not to {link}"
        )


def _copy_counted(src: IO[bytes], target: Path, rel: str, total: int, limits: ReadLimits) -> int:
    written = 0
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > limits.max_file_bytes:
                raise _too_big(rel, limits)
            if total + written > limits.max_total_bytes:
                raise _too_much(rel, limits)
            out.write(chunk)
    return written


def _too_big(rel: str, limits: ReadLimits) -> ImportInputError:
    return ImportInputError(
        rel, "", f"a file of at most {limits.max_file_bytes} bytes uncompressed (ReadLimits.max_file_bytes)"
    )


def _too_much(rel: str, limits: ReadLimits) -> ImportInputError:
    return ImportInputError(
        rel,
        "",
        f"an export of at most {limits.max_total_bytes} bytes uncompressed in all (ReadLimits.max_total_bytes)",
    )


def _too_many(limits: ReadLimits) -> str:
    return f"an export of at most {limits.max_files} files (ReadLimits.max_files)"
