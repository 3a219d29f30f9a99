"""The working directory: where exported graphs and engines live between runs.

Every artifact is a directory holding the payload files and a `manifest.json`
that records the key it was built for and, per file, its size, mtime and
SHA-256. An artifact is written under a temporary name (`.NAME.tmp-XXXX`),
fsynced, and renamed into place only when complete, so a crash or a second
process never leaves something the next run would trust.

What a run trusts: a payload file whose size and mtime equal the manifest's is
taken as written (hashing multi-GB weights on every run would cost seconds);
one whose mtime changed is hashed, and any mismatch, like a missing or
malformed manifest, makes the artifact rebuilt. `--verify` hashes every file.

Locks (flock, so the kernel drops them when a process dies): a builder holds
the artifact's `.NAME.lock` while it writes, and every process that uses the
artifact holds its `.NAME.use` shared for as long as it lives. So a temp dir
whose lock is free belongs to a dead writer and is swept, and `--cleanup`
removes only artifacts no other process is building or using. Lock files are
never deleted: a waiter on a deleted lock file would not exclude the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from NNDF.base.errors import UsageError
from NNDF.base.hashing import file_digest

MANIFEST = "manifest.json"
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"     # an ONNX graph and its external weights
TEMP_MARK = ".tmp-"
STALE_MARK = ".stale-"
_LEFTOVER = re.compile(r"^\.(?P<name>.+?)(?P<kind>\.tmp-|\.stale-)[A-Za-z0-9_]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR}


def source_identity(path: Path) -> str:
    """What names a graph file in the keys of artifacts made from it: a cached artifact's manifest
    (which holds its key and file sizes), or a user's file's own bytes."""
    manifest = Path(path).parent / MANIFEST
    return file_digest(manifest) if manifest.is_file() else file_digest(path)


def source_description(path: Path) -> dict:
    """The graph name, inputs and outputs a cached artifact's manifest records ({} of those for a
    user's file, named by its stem)."""
    manifest = Path(path).parent / MANIFEST
    d = json.loads(manifest.read_text()) if manifest.is_file() else {}
    return {"inputs": d.get("inputs", []), "outputs": d.get("outputs", []), "graph": d.get("graph", Path(path).stem)}


def recorded_digest(path: Path) -> str:
    """SHA-256 of `path`, taken from the manifest beside it while the file's size and mtime
    still match what the manifest recorded, so multi-GB weights are not re-read every run;
    any other file is hashed."""
    path = Path(path)
    try:
        manifest = json.loads((path.parent / MANIFEST).read_text())
        record = manifest["files"][path.name]
        st = path.stat()
        if st.st_size == record["size"] and st.st_mtime_ns == record["mtime_ns"] and _SHA256.match(record["sha256"]):
            return record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass   # not an artifact file, or a manifest of another shape: hash it
    return file_digest(path)


def is_disk_error(e: OSError, where: Path) -> bool:
    """Whether `e` is the disk's fault (full, read-only, no permission) rather than the code's:
    a full disk anywhere, or an unwritable place under `where`."""
    if e.errno in FULL_DISK_ERRNOS or (e.errno is None and _nearly_full(where)):
        return True
    return e.errno in UNWRITABLE_ERRNOS and str(e.filename or "").startswith(str(where))


def _nearly_full(where: Path) -> bool:
    """Some writers (numpy's tofile) report a short write without an errno; a full disk is why."""
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def disk_error(e: OSError, writing: Path, fix: str) -> UsageError:
    """A write that failed because of the disk or its permissions, as the one line a user sees."""
    what = e.strerror if e.errno in UNWRITABLE_ERRNOS else "no space left on the device"
    return UsageError(f"cannot write {writing}: {what}", fix)


def default_file_mode(executable: bool = False) -> int:
    """What open() would give a new file (0644 under the usual umask of 022); mkstemp/mkdtemp
    give 0600/0700, which would make results and caches unreadable to anyone else."""
    try:
        umask = int(re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.M).group(1), 8)
    except (OSError, AttributeError):
        umask = 0o022
    return (0o777 if executable else 0o666) & ~umask


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, fix: str) -> None:
    """Write `path` so that a reader sees the old file or the whole new one, never part of one,
    with the permissions open() would give, and no temp file left behind when the write fails.
    Errors of the disk are one line (`fix` says what to do)."""
    path = Path(path)
    # not `.tmp-`: sweeps take those for dead writers' when their lock is free, and results have no lock
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.writing-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and is_disk_error(e, path.parent):
            raise disk_error(e, path, fix) from None
        raise
    with contextlib.suppress(OSError):
        _fsync_path(path.parent)


# --------------------------------------------------------------------------- locks
# Two flock files per artifact, both kept forever beside it:
#   .NAME.lock  exclusive while a process builds (or discards) NAME; its temp dir lives only that long
#   .NAME.use   shared by every process that uses NAME, until it exits; --cleanup needs it exclusive
# Users never wait for each other, and a builder never waits for users.
_used: dict[Path, IO] = {}      # .use files this process holds shared
_used_by = os.getpid()          # a forked child must not convert its parent's locks


def lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def use_file(path: Path) -> Path:
    return path.parent / f".{path.name}.use"


def _use_handles() -> dict[Path, IO]:
    global _used_by
    if _used_by != os.getpid():
        _used.clear()           # the parent's handles; closing ours would not release its locks anyway
        _used_by = os.getpid()
    return _used


def hold_shared(path: Path) -> None:
    """Mark `path` as used by this process until it exits, so no --cleanup elsewhere removes it."""
    held = _use_handles()
    name = use_file(path)
    if name in held:
        return
    name.parent.mkdir(parents=True, exist_ok=True)
    handle = open(name, "a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    held[name] = handle


@contextlib.contextmanager
def lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold `path`'s build lock; yields False (without it) when `wait` is False and it is taken."""
    name = lock_file(path)
    name.parent.mkdir(parents=True, exist_ok=True)
    with open(name, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def unused(path: Path) -> Iterator[bool]:
    """Whether no other process uses `path` (then it is ours alone until the block ends)."""
    held = _use_handles()
    name = use_file(path)
    ours = held.get(name)
    handle = ours or open(name, "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)   # converting ours drops it first
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        if ours is not None:
            fcntl.flock(handle, fcntl.LOCK_SH)    # back to shared (or again, if the conversion failed)
        else:
            handle.close()


# --------------------------------------------------------------------------- artifacts
@dataclass(frozen=True)
class Artifact:
    """A finished artifact directory and its manifest."""

    path: Path
    manifest: dict

    def file(self, name: str) -> Path:
        return self.path / name


def _well_formed(manifest) -> bool:
    """The shape this module writes; anything else (an older toolkit, a hand edit) is not trusted."""
    if not isinstance(manifest, dict) or "key" not in manifest or not isinstance(manifest.get("files"), dict):
        return False
    for name, record in manifest["files"].items():
        if not isinstance(name, str) or "/" in name or name in ("", ".", "..") or not isinstance(record, dict):
            return False
        if not (isinstance(record.get("size"), int) and isinstance(record.get("mtime_ns"), int)
                and isinstance(record.get("sha256"), str) and _SHA256.match(record["sha256"])):
            return False
    return True


def _file_problem(f: Path, record: dict, verify: bool) -> str | None:
    """Why payload file `f` is not the one its manifest describes, or None."""
    try:
        st = f.stat()
    except OSError:
        return "is missing"
    if not f.is_file():
        return "is not a file"
    if st.st_size != record["size"]:
        return "has a different size than when it was written (truncated or replaced)"
    if verify or st.st_mtime_ns != record["mtime_ns"]:
        if file_digest(f) != record["sha256"]:
            return "has different bytes than when it was written (its SHA-256 does not match)"
        # same bytes: put the recorded mtime back so the next run trusts it without hashing again
        with contextlib.suppress(OSError):
            os.utime(f, ns=(st.st_atime_ns, record["mtime_ns"]))
    return None


def inspect(path: Path, key: dict, required_files: tuple[str, ...] = (),
            verify: bool = False) -> tuple[Artifact | None, str | None]:
    """(the artifact, None) if `path` holds a complete artifact for `key`; (None, None) if
    nothing is there; (None, why) if something is there that must not be trusted."""
    if not path.exists():
        return None, None
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"it has no {MANIFEST}"
    except (OSError, ValueError):
        return None, f"its {MANIFEST} is unreadable"
    if not _well_formed(manifest):
        return None, f"its {MANIFEST} is not in the form this toolkit writes"
    if manifest["key"] != key:
        return None, "it was built for different settings"
    files = manifest["files"]
    for name in sorted(set(required_files) | set(files)):   # every payload file, e.g. weights beside a graph
        problem = "is missing" if name not in files else _file_problem(path / name, files[name], verify)
        if problem:
            return None, f"{name} {problem}"
    return Artifact(path, manifest), None


def discard(path: Path, why: str) -> None:
    """Remove an untrusted artifact (the caller holds its lock). Renamed first, so no reader
    ever sees it half deleted; a crash mid-delete leaves a `.stale-` dir the next sweep removes."""
    print(f"note: rebuilding {path}: {why}", file=sys.stderr, flush=True)
    trash = path.with_name(f".{path.name}{STALE_MARK}{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    _remove(trash)


def sweep(directory: Path) -> int:
    """Remove the leftovers of dead writers in `directory`: temp dirs and files whose lock
    nobody holds (a live writer holds it for as long as its temp exists) and discarded
    artifacts. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if not match:
            continue
        if match["kind"] == STALE_MARK:
            _remove(Path(entry.path))
            removed += 1
            continue
        with lock(Path(directory) / match["name"], wait=False) as free:
            if free:
                _remove(Path(entry.path))
                removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class WorkingDir:
    def __init__(self, root: str | os.PathLike, verify: bool = False, what: str = "working dir",
                 fix: str = "pass a writable --working-dir"):
        self.root = Path(root).expanduser().resolve()
        self.verify = verify       # hash every payload file on load, not only those whose mtime changed
        self.what, self.fix = what, fix
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe, probe_name = tempfile.mkstemp(prefix=".probe-writable-", dir=self.root)
            os.close(probe)
            os.unlink(probe_name)
        except OSError as e:
            raise UsageError(f"cannot use {what} {self.root}: {e.strerror or e}", fix) from None

    def artifact_dir(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @staticmethod
    def load(path: Path, key: dict, required_files: tuple[str, ...], verify: bool = False) -> Artifact | None:
        """The artifact at `path` if it is complete and built for `key`; None if absent.
        Anything else there is an error (callers that rebuild use `build`)."""
        found, problem = inspect(path, key, required_files, verify)
        if problem:
            raise UsageError(f"{path} cannot be trusted: {problem}", "delete it or run with --cleanup")
        return found

    lock = staticmethod(lock)

    def build(self, path: Path, key: dict, required_files: tuple[str, ...],
              produce: Callable[[Path], dict | None]) -> Artifact:
        """Reuse the artifact at `path` for `key`, or build it atomically.

        `produce(tmp_dir)` writes the payload files into `tmp_dir` and may return
        extra manifest fields. The directory is renamed into place only after the
        files and the manifest are written and fsynced. Something untrusted at
        `path` (changed bytes, a foreign or malformed manifest) is rebuilt.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sweep(path.parent)
        except OSError as e:
            raise disk_error(e, path.parent, self.fix) from None
        hold_shared(path)     # from here on no --cleanup elsewhere removes it
        found, _ = inspect(path, key, required_files, self.verify)
        if found is not None:
            return found
        with lock(path):
            found, problem = inspect(path, key, required_files, self.verify)  # built meanwhile?
            if found is not None:
                return found
            if problem is not None:
                discard(path, problem)
            return Artifact(path, self._write(path, key, produce))

    def _write(self, path: Path, key: dict, produce: Callable[[Path], dict | None]) -> dict:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent))
        try:
            extra = produce(tmp) or {}
            files = {}
            for name in sorted(os.listdir(tmp)):
                _fsync_path(tmp / name)
                st = (tmp / name).stat()
                files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_digest(tmp / name)}
            manifest = {"key": key, "files": files, **extra}
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
                f.write(json.dumps(manifest, indent=2, sort_keys=True, default=str))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, default_file_mode(executable=True))
            _fsync_path(tmp)
            os.replace(tmp, path)
            _fsync_path(path.parent)
            return json.loads(json.dumps(manifest, default=str))   # as a later run will read it
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and is_disk_error(e, path.parent):
                raise disk_error(e, path, f"free some space or {self.fix}") from None
            raise

    def cleanup(self, *parts: str) -> list[Path]:
        """Remove the artifacts under `parts` that no other process is building or using,
        and dead writers' leftovers; returns what was kept because it is in use."""
        target = self.artifact_dir(*parts)
        kept = []
        if not target.exists():
            return kept
        for directory, subdirs, files in os.walk(target, topdown=True):
            directory = Path(directory)
            sweep(directory)
            for name in list(subdirs):
                child = directory / name
                if name.startswith(".") or not (child / MANIFEST).exists():
                    continue
                subdirs.remove(name)          # an artifact: removed whole or kept whole
                with lock(child, wait=False) as not_building, unused(child) as not_used:
                    if not_building and not_used:
                        trash = child.with_name(f".{name}{STALE_MARK}{uuid.uuid4().hex[:8]}")
                        os.replace(child, trash)
                        _remove(trash)
                    else:
                        kept.append(child)
        return kept
