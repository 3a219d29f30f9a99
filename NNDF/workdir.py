"""The working directory: where exported graphs and engines live between runs.

Every artifact is a directory holding the payload files and a `manifest.json`
that records the key it was built for. An artifact is written under a
temporary name and renamed into place only when complete, so a crash or a
second process never leaves something the next run would trust. The manifest
is written last; a directory without one, or with a different key, is not
ours and is never reused silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from NNDF.errors import UsageError

MANIFEST = "manifest.json"


def stable_hash(obj, length: int = 10) -> str:
    """A short content hash of a JSON-serialisable key (sorted, so order-free)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A finished artifact directory and its manifest."""

    path: Path
    manifest: dict

    def file(self, name: str) -> Path:
        return self.path / name


class WorkingDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create working dir {self.root}: {e.strerror}",
                             "pass a writable --working-dir") from None

    def artifact_dir(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @staticmethod
    def load(path: Path, key: dict, required_files: tuple[str, ...]) -> Artifact | None:
        """Return the artifact at `path` if it is complete and built for `key`.

        None means "absent: build it". A directory that exists but is not a
        complete artifact for this key is an error, because it was put there by
        something else and silently replacing it could hide a user's mistake.
        """
        if not path.exists():
            return None
        manifest_path = path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            raise UsageError(f"{path} exists but has no readable {MANIFEST}, so it was not written by this toolkit",
                             "delete it or run with --cleanup") from None
        if manifest.get("key") != key:
            raise UsageError(f"{path} was built for different settings than this run",
                             "delete it or run with --cleanup")
        sizes = manifest.get("files", {})
        for name in sorted(set(required_files) | set(sizes)):   # every payload file, e.g. weights beside a graph
            f = path / name
            expected = sizes.get(name)
            if not f.is_file() or expected is None or f.stat().st_size != expected:
                raise UsageError(f"{f} is missing or truncated (its size does not match {MANIFEST})",
                                 "delete it or run with --cleanup")
        return Artifact(path, manifest)

    @staticmethod
    @contextlib.contextmanager
    def lock(path: Path) -> Iterator[None]:
        """Serialise builders of the same artifact across processes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(self, path: Path, key: dict, required_files: tuple[str, ...],
              produce: Callable[[Path], dict | None]) -> Artifact:
        """Reuse the artifact at `path` for `key`, or build it atomically.

        `produce(tmp_dir)` writes the payload files into `tmp_dir` and may return
        extra manifest fields. The directory is renamed into place only after the
        manifest (with file sizes) is written.
        """
        found = self.load(path, key, required_files)
        if found is not None:
            return found
        with self.lock(path):
            found = self.load(path, key, required_files)  # another process may have built it meanwhile
            if found is not None:
                return found
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            try:
                extra = produce(tmp) or {}
                sizes = {name: (tmp / name).stat().st_size for name in sorted(os.listdir(tmp))}
                manifest = {"key": key, "files": sizes, **extra}
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
                os.replace(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Artifact(path, manifest)

    def cleanup(self, *parts: str) -> None:
        target = self.artifact_dir(*parts)
        if target.exists():
            shutil.rmtree(target)
