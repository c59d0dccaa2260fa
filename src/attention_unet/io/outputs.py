"""An output folder that never loses the user's files: every file is written under a temporary
name and renamed when complete, a file the tool did not write is never replaced, and the files it
did write are listed (``.attention-unet-outputs``) so that a rerun may replace them and a later
run does not take them for inputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

MANIFEST = ".attention-unet-outputs"
RUN_STAMP = ".attention-unet-run"  # what the per-image outputs here were made with (predict --skip-existing)
# a cell starting with these is a formula to Excel, LibreOffice and Google Sheets (OWASP's list), or
# is the quote that marks one neutralised: such text cells get a leading quote, read back without it
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (an input named ``=HYPERLINK(...)``)
    with a leading ``'``, which shows the text as it is; numbers are left as they are.

    >>> spreadsheet_cell("=1+1"), spreadsheet_cell("-x"), spreadsheet_cell(-3), spreadsheet_cell("a=b")
    ("'=1+1", "'-x", -3, 'a=b')
    """
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def from_spreadsheet_cell(text: str) -> str:
    """A cell :func:`spreadsheet_cell` wrote, as it was.

    >>> from_spreadsheet_cell(spreadsheet_cell("=1+1")), from_spreadsheet_cell("a")
    ('=1+1', 'a')
    """
    return text.removeprefix("'")


# the run's own tables and pages, rebuilt from its outputs on every run: rewritten even when a
# spreadsheet opened and saved them (a per-image output changed since written is the user's)
REGENERATED = ("summary.csv", "index.html", "score.csv", "summary.json", "report.html")


def _entries(folder: Path) -> list[str]:
    try:
        text = (folder / MANIFEST).read_bytes().decode(errors="surrogateescape")  # \r is part of a name
        return [line for line in text.split("\n") if line]
    except OSError:
        return []


def listed(folder: Path) -> set[str]:
    """The paths an output folder lists as written by its runs: none where it has no list, or one
    that cannot be read (permissions, damage): then nothing there is taken for the tool's. A line
    is a path, or a path, a tab and the size and modification time the file had when written."""
    return {line.split("\t", 1)[0] for line in _entries(folder)}


def stamps(folder: Path) -> dict[str, str]:
    """Each listed file's "size mtime_ns" as the tool left it (the last one recorded)."""
    return dict(line.split("\t", 1) for line in _entries(folder) if "\t" in line)


def stamp_of(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def written_by_a_run(path: Path, manifests: dict[Path, set[str]] | None = None) -> bool:
    """Whether an output folder at or above ``path``'s folder lists it (or a folder it lies in) as
    written by an earlier run there: an image folder that once took ``--out`` itself holds labels, masks and overlays
    that are not inputs, whichever ``--out`` this run has. ``manifests`` caches each folder's list."""
    manifests = {} if manifests is None else manifests
    real = path.resolve()
    for folder in real.parents:
        if folder not in manifests:  # an unreadable list lists nothing rather than stopping the batch
            manifests[folder] = listed(folder)
        relative = real.relative_to(folder)
        # the file itself, or a folder of ours it lies in (a block-wise run's work folder, a zarr)
        if manifests[folder] and any(p.as_posix() in manifests[folder] for p in (relative, *relative.parents[:-1])):
            return True
    return False


class OutputFolder:
    """The folder a command writes into (created on first use)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.created = not self.root.exists()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"--out {self.root}: is a file, not a folder")
        self.ours = listed(self.root)
        self.stamps = stamps(self.root)
        self._listing = threading.Lock()  # files of a batch are written from several threads (commands.jobs)

    def lock(self) -> None:
        """Hold the folder for this process (until it exits): a second run into it is an error.
        An advisory lock (fcntl), so a killed run leaves nothing to clean up."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs into one folder are not guarded there
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.root / ".attention-unet.lock", "w")  # noqa: SIM115 - held open for the process's life
        except OSError as exc:
            raise InputError(f"--out {self.root}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"--out {self.root}: another attention-unet run is writing there; wait for it or choose another folder"
            ) from None

    def release(self) -> None:
        """Let go of the folder; remove it again if this run created it and wrote nothing."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            Path(lock.name).unlink(missing_ok=True)
            lock.close()
            self._lock = None
        if self.created and not self.ours:
            with contextlib.suppress(OSError):
                (self.root / RUN_STAMP).unlink(missing_ok=True)
                self.root.rmdir()

    def made_with(self, stamp: str) -> bool:
        """Whether the earlier run here made its outputs with ``stamp`` (the model and options), and
        records ``stamp`` for the next one. A folder without a record was made by another version:
        not the same."""
        record = self.root / RUN_STAMP
        same = record.is_file() and record.read_text() == stamp
        self.root.mkdir(parents=True, exist_ok=True)
        record.write_text(stamp)
        return same

    def done(self, path: Path) -> bool:
        """Whether ``path`` exists and was written (completely: writes are renamed into place) by this tool."""
        try:
            return path.is_file() and self.is_ours(path)
        except OSError:  # a name too long for the file system: never written
            return False

    def is_ours(self, path: Path) -> bool:
        """Whether ``path`` is a file an earlier run wrote here (so not an input)."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix() in self.ours
        except ValueError:
            return False

    def check(self, path: Path, doing: str = "replacing") -> str:
        """``path`` relative to the folder; one line if something is there that this tool did not write."""
        relative = path.relative_to(self.root).as_posix()
        if ".." in Path(relative).parts:  # never outside the folder, whatever a name holds
            raise InputError(f"{path}: lies outside --out {self.root}; not writing there")
        if path.exists() and relative not in self.ours:
            raise InputError(
                f"{path}: exists and was not written by attention-unet; not {doing} it (choose another --out)"
            )
        changed = relative in self.stamps and path.is_file() and stamp_of(path) != self.stamps[relative]
        if changed and path.name not in REGENERATED:
            raise InputError(  # a labels file corrected by hand under our name is the user's now
                f"{path}: changed since attention-unet wrote it; not {doing} it (move it, or choose another --out)"
            )
        return relative

    @contextmanager
    def writing(self, path: Path) -> Iterator[Path]:
        """A temporary path to write ``path``'s content to; renamed to ``path`` when the block ends
        without error, removed otherwise. A file there that this tool did not write is an error."""
        relative = self.check(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
        try:
            yield temporary
            self._own(relative)  # listed before it appears, so a crash cannot orphan it
            os.replace(temporary, path)
            with self._listing:
                self.stamps[relative] = stamp_of(path)  # as written: a later change is the user's
                self._list(f"{relative}\t{self.stamps[relative]}")
        finally:
            temporary.unlink(missing_ok=True)

    def claim(self, path: Path) -> Path:
        """``path`` (a work folder, say) listed as this tool's; one line if it is someone else's."""
        self._own(self.check(path, "touching"))
        return path

    def _own(self, relative: str) -> None:
        """List ``relative`` as this tool's (once)."""
        with self._listing:
            if relative not in self.ours:
                self.ours.add(relative)
                self._list(relative)

    def place(self, source: Path, path: Path) -> None:
        """Move a finished folder ``source`` (written inside the output folder) to ``path``,
        replacing an earlier one of ours there only once the new one is in place."""
        self.claim(path)
        old = path.with_name(f".old-{os.getpid()}-{path.name}")
        if path.exists():
            os.replace(path, old)
        os.replace(source, path)
        shutil.rmtree(old, ignore_errors=True)

    def write(self, path: Path, writer: Callable[[Path], object]) -> None:
        """``writer(temporary_path)``, then the rename."""
        with self.writing(path) as temporary:
            writer(temporary)

    def _list(self, relative: str) -> None:
        """Append one name to the manifest (appending, not rewriting: a batch of n files costs n
        short writes, not n rewrites of a growing list)."""
        with open(self.root / MANIFEST, "ab+") as f:
            # after a last line with no end (a list edited by hand, or damaged), not joined to it
            ended = f.seek(0, os.SEEK_END) == 0 or (f.seek(-1, os.SEEK_END), f.read(1))[1] == b"\n"
            f.write(("" if ended else "\n").encode() + f"{relative}\n".encode(errors="surrogateescape"))
