"""Output folders of a run (``--out``): the emptiness / ownership check, an exclusive lock, a staging folder that
is swapped in whole at the end, and the manifest that marks a folder as denseood's. Standard library only.

:func:`check_out_dir` refuses a non-empty ``--out`` without ``--overwrite`` and, with it, a folder without
:data:`MANIFEST` (denseood's own hidden entries do not count). :func:`open_output` creates the folder, takes the
``fcntl.flock`` lock (:data:`LOCK`; a second run fails at once naming the process), checks again, removes stale
temporaries of killed runs and makes the staging folder ``run.dir``. A run writes every output under ``run.dir``
(a new output file needs nothing else); :meth:`OutputRun.commit` moves it into ``--out``, removing the files the
previous manifest lists, and writes the manifest last; without a commit :meth:`OutputRun.close` leaves ``--out``
as it was. Training writes in place (``stage=False``). Under torchrun rank 0 owns the folder and the other ranks
get the staging path from it. See docs/architecture.md (core modules).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

from ._version import __version__
from .errors import ConfigError, DenseOODError, OutputError
from .io import _output_error, _pid_alive, atomic_write_json, check_writable_dir, clean_stale_temp

MANIFEST = "denseood-manifest.json"
LOCK = ".denseood-lock"
FORMAT = "denseood-outputs"
#: denseood's own temporary folders: ``.denseood-<kind>-[<pid>-]<random>`` (folders of 0.2 had no pid)
_OWN_DIR = re.compile(r"^\.denseood-(stage|trash|eval-maps-r\d+)-(?:(\d+)-)?[A-Za-z0-9_]+$")
_TMP_FILE = re.compile(r"^\..+\.denseood-tmp-\d+-[0-9a-f]+$")
_HELD: dict[str, "OutputRun"] = {}  # folders this process holds, by resolved path (open_output is re-entrant)


def is_own_entry(name: str) -> bool:
    """True for the entries of a folder that denseood manages itself: the lock file, atomic-write temporaries,
    staging / trash / eval temporary folders."""
    return name == LOCK or bool(_OWN_DIR.match(name) or _TMP_FILE.match(name))


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of folder ``out`` as a dict, or None when there is none or it is not denseood's."""
    try:
        data = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def user_entries(out: Path) -> list[str]:
    """Names in ``out`` that are not denseood's own bookkeeping (sorted)."""
    try:
        return sorted(e.name for e in out.iterdir() if not is_own_entry(e.name))
    except OSError:
        return []


def check_out_dir(out: str | os.PathLike, overwrite: bool, *, what: str = "--out", alternative: str = "",
                  marker: str = MANIFEST, owner: str = "denseood", not_owned: str = "") -> Path:
    """The one check of every verb's ``--out``. Refuse ``out`` when it is a file, or a non-empty folder without
    ``overwrite``, or (with ``overwrite``) a non-empty folder without ``marker`` (denseood's manifest; the demo
    passes its own marker file, ``owner`` and ``not_owned``, the end of that message). ConfigError naming the
    folder, a few of its files and the way out; ``alternative``: another way out to name ("--resume to continue
    it"). Returns the Path (nothing is created)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} {out} exists and is a file, not a folder; choose another {what}")
    if not out.is_dir():
        return out
    names = user_entries(out)
    if not names:
        return out
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    if not overwrite:
        alt = f", {alternative}" if alternative else ""
        raise ConfigError(f"{what} {out} already exists and is not empty ({shown}); pass --overwrite to replace the "
                          f"denseood run there{alt}, or choose another folder")
    owned = read_manifest(out) is not None if marker == MANIFEST else (out / marker).is_file()
    if not owned:
        tail = not_owned or f"--overwrite replaces only a folder of denseood's own outputs: choose another {what}"
        raise ConfigError(f"{what} {out} holds files {owner} did not write ({shown}; no {marker}); {tail}")
    return out


def clean_stale_outputs(out: Path) -> list[Path]:
    """Remove denseood's temporaries left in ``out`` by killed runs: atomic-write temp files of dead pids
    (:func:`denseood.io.clean_stale_temp`) and own temporary folders whose pid is dead or unknown (call only while
    holding the lock, so no live run of this folder owns them). Returns the removed paths."""
    removed = clean_stale_temp(out)
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        m = _OWN_DIR.match(p.name)
        if not m or p.is_symlink() or not p.is_dir():
            continue
        pid = int(m.group(2)) if m.group(2) else 0
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of the files under ``folder`` (denseood's own entries at the top level excluded)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = Path(dirpath).relative_to(folder)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if not is_own_entry(d)]
            filenames = [f for f in filenames if not is_own_entry(f) and f != MANIFEST]
        files += [(rel_dir / f).as_posix() for f in filenames]
    return sorted(files)


def command_line() -> str:
    """This process's command line, shell-quoted; ``python -m denseood`` is written as ``denseood``."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "denseood"):
        argv[0] = "denseood"
    return " ".join(shlex.quote(a) for a in argv)


def _env_rank() -> int:
    """This process's rank: torch.distributed's when initialised, else torchrun's RANK, else 0."""
    if "torch.distributed" in sys.modules:
        from . import dist

        if dist.is_dist():
            return dist.rank()
    return int(os.environ.get("RANK", "0") or 0)


class OutputRun:
    """One run's hold on an output folder; see the module docstring. Get it from :func:`open_output`.

    ``dir``: where this run writes (the staging folder, or ``out`` itself with ``stage=False``); ``out``: the
    final folder (name it in results); ``owner``: True on the process that holds the lock (rank 0).
    """

    def __init__(self, out: Path, overwrite: bool, stage: bool, what: str, alternative: str,
                 resume: bool = False, outputs: tuple[str, ...] = (), info: dict | None = None) -> None:
        self.out, self.overwrite, self.staged, self.what, self.alternative = out, overwrite, stage, what, alternative
        self.resume, self.outputs, self.info = resume, tuple(outputs), dict(info or {})
        self.owner = _env_rank() == 0
        self.dir = out
        self.committed = False
        self._fd: int | None = None
        self._created: Path | None = None  # the topmost folder this run created
        self._depth = 0

    # ---------------------------------------------------------------- open
    def _open(self) -> None:
        distributed = False
        if "torch.distributed" in sys.modules:
            from . import dist

            distributed = dist.is_dist()
        err: DenseOODError | None = None
        if self.owner:
            try:
                self._open_owner()
            except DenseOODError as e:
                self.close()
                if not distributed:
                    raise
                err = e
        if distributed:  # the other ranks learn the staging folder (or rank 0's error) from rank 0
            kind, msg, stage = dist.gather((type(err).__name__ if err else None, str(err or ""), str(self.dir)))[0]
            if err is not None:
                raise err
            if kind is not None:
                raise (ConfigError if kind == "ConfigError" else OutputError)(msg)
            self.dir = Path(stage)

    def _check(self) -> None:
        if self.resume:  # the user continues the run in this folder: its files are expected
            if self.out.exists() and not self.out.is_dir():
                raise ConfigError(f"{self.what} {self.out} exists and is a file, not a folder")
            return
        check_out_dir(self.out, self.overwrite, what=self.what, alternative=self.alternative)

    def _open_owner(self) -> None:
        out = self.out
        self._check()
        self._created = _first_missing(out)
        check_writable_dir(out, self.what)
        self._lock()
        self._check()  # again, under the lock
        clean_stale_outputs(out)
        if self.staged:
            stage = out / f".denseood-stage-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                stage.mkdir()
            except OSError as e:
                raise _output_error(e, "creating the staging folder", stage) from e
            self.dir = stage
        elif read_manifest(out) is None:
            # written in place: an in-progress manifest first, so a killed run's folder is still denseood's
            self._write_manifest(_files_under(out), self.info, complete=False, hashes=False)

    def _lock(self) -> None:
        import fcntl

        path = self.out / LOCK
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise _output_error(e, "creating the lock file", path) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OutputError(f"{self.what} {self.out} is in use by process {holder} (another denseood run "
                                      f"holds {path}); wait for it to finish or choose another {self.what}") from e
                raise _output_error(e, "locking", path) from e
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if same:  # not a lock file the previous holder unlinked after we opened it
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return
            os.close(fd)
        raise OutputError(f"cannot lock {path}: it keeps being replaced; is another denseood run using {self.out}?")

    def remove_previous(self) -> None:
        """stage=False with ``overwrite``: remove the files the previous run's manifest lists and the names in
        ``outputs``; call it once the run's inputs are checked and loaded, right before the first write."""
        if not (self.owner and self.overwrite and not self.staged):
            return
        old = read_manifest(self.out) or {}
        for rel in [*old.get("files", {}), *self.outputs]:
            p = _inside(self.out, rel)
            if p is not None and (p.is_file() or p.is_symlink()):
                p.unlink()
                _prune_parents(self.out, p)
        self._write_manifest(_files_under(self.out), self.info, complete=False, hashes=False)

    # ---------------------------------------------------------------- commit / close
    def commit(self, info: dict[str, Any] | None = None) -> Path | None:
        """Move the staged outputs into ``out`` and write the manifest (``info``: e.g. verb, model, command; the
        files, sizes and sha256 are added). Only the owner acts; returns the manifest path there, None elsewhere."""
        if not self.owner:
            self.committed = True
            return None
        files = _files_under(self.dir)
        if self.staged:
            old = set((read_manifest(self.out) or {}).get("files", {}))
            self._check_collisions(files, old)
            # a crash during the swap still leaves a manifest that covers every file denseood wrote here
            self._write_manifest(sorted(old | set(files)), info, complete=False, hashes=False)
            trash = self.out / f".denseood-trash-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                for rel in sorted(old):
                    src = _inside(self.out, rel)
                    if src is not None and (src.is_file() or src.is_symlink()):
                        dst = trash / rel
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
                        _prune_parents(self.out, src)
                _merge(self.dir, self.out)
            except OSError as e:
                raise _output_error(e, "moving the results into", self.out) from e
            shutil.rmtree(trash, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = self.out
        path = self._write_manifest(files, {**self.info, **(info or {})}, complete=True, hashes=True)
        self.committed = True
        return path

    def _check_collisions(self, files: list[str], old: set[str]) -> None:
        for rel in files:
            target = self.out / rel
            if rel not in old and (target.exists() or target.is_symlink()):
                raise OutputError(f"{self.what} {self.out} holds {rel}, which is not in its {MANIFEST}; denseood "
                                  f"does not replace files it did not write: move it away and run again "
                                  f"(nothing in {self.out} was changed)")

    def _write_manifest(self, files: list[str], info: dict | None, *, complete: bool, hashes: bool) -> Path:
        entries: dict[str, Any] = {}
        for rel in files:
            p = self.out / rel
            entries[rel] = ({"size": p.stat().st_size, "sha256": sha256_file(p)} if hashes and p.is_file() else {})
        data = {"format": FORMAT, "format_version": 1, "denseood_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": command_line(), "complete": complete,
                **(info or {}), "files": entries}
        return atomic_write_json(self.out / MANIFEST, data)

    def close(self) -> None:
        """Release the folder; without a commit remove the staging folder (and the folder when this run created it
        and it is empty). The previous contents of ``out`` are never touched here."""
        if self.owner and not self.committed and self.dir != self.out:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = self.out
        if self._fd is not None:
            try:
                os.unlink(self.out / LOCK)  # while still holding it: a waiting opener sees the inode change
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if self._created is not None and not self.committed:
            if self.owner and user_entries(self.out) == [MANIFEST]:  # only our in-progress manifest
                (self.out / MANIFEST).unlink(missing_ok=True)
            _remove_empty_up_to(self.out, self._created)
        _HELD.pop(str(self.out.resolve()), None)

    def __enter__(self) -> "OutputRun":
        return self

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        if isinstance(err, DenseOODError) and self.dir != self.out and len(err.args) == 1:
            # name the file where the user will look for it, not inside the staging folder that is removed now
            err.args = (str(err.args[0]).replace(str(self.dir), str(self.out)),)
        self._depth -= 1
        if self._depth <= 0:
            self.close()


def open_output(out: str | os.PathLike, overwrite: bool = False, *, stage: bool = True, what: str = "--out",
                alternative: str = "", resume: bool = False, outputs: tuple[str, ...] = (),
                info: dict | None = None) -> OutputRun:
    """Take ``out`` for this run (see the module docstring); use as ``with open_output(...) as run:`` and write
    under ``run.dir``. Re-entrant: opening a folder this process already holds returns the same run (closed by
    the outermost ``with``). Raises ConfigError (refused folder) or OutputError (in use, not writable).

    stage=False writes in place (``run.dir`` is ``out``; for training, whose last.pt must survive a kill): an
    in-progress manifest is written at once, and with ``overwrite`` :meth:`OutputRun.remove_previous` removes what
    the previous manifest lists plus the names in ``outputs``. resume: accept a non-empty folder (the run
    continues there). info: manifest fields (verb, model, ...)."""
    out = Path(out)
    key = str(out.resolve())
    run = _HELD.get(key)
    if run is None:
        run = OutputRun(out, overwrite, stage, what, alternative, resume, outputs, info)
        run._open()
        _HELD[key] = run
    run._depth += 1
    return run


@contextlib.contextmanager
def probed_dir(path: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """:func:`denseood.io.check_writable_dir` for a run that writes one file into ``path`` (no lock or staging):
    when the block raises, the folders the probe created are removed again if still empty."""
    path = Path(path)
    top = _first_missing(path)
    check_writable_dir(path, what)
    try:
        yield path
    except BaseException:
        if top is not None:
            _remove_empty_up_to(path, top)
        raise


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (what creating ``path`` will make), or None."""
    if path.exists():
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def _inside(root: Path, rel: str) -> Path | None:
    """``root/rel`` when ``rel`` is a relative path without '..' (a manifest entry), else None."""
    p = Path(rel)
    return None if p.is_absolute() or ".." in p.parts else root / p


def _merge(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst`` (renames; folders that exist in both are merged)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge(entry, target)
        else:
            os.replace(entry, target)


def _prune_parents(root: Path, removed: Path) -> None:
    """rmdir the folders between ``removed`` (a file just moved away) and ``root`` while they are empty."""
    p = removed.parent
    while p != root and root in p.parents:
        try:
            p.rmdir()
        except OSError:
            return
        p = p.parent


def _remove_empty_up_to(folder: Path, top: Path) -> None:
    """rmdir ``folder`` and its parents up to ``top`` while they are empty (what a refused run created)."""
    p = folder
    while True:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top or p.parent == p:
            return
        p = p.parent

