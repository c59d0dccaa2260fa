"""ONNX files as predict reads and runs them: their metadata and checks, and an ONNX Runtime session
as a predict runner. No torch here (and ``onnx`` only to check a file that is not shipped), so
that predict's default engine starts without either."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..io.limits import check_model_file
from .config import ModelConfig
from .files import parse_info

if TYPE_CHECKING:
    from ..inference.tiles import Runner

ONNX_DOMAINS = {"", "ai.onnx"}  # the standard operators, the only ones our exports use


def onnx_info(path: str | Path) -> dict:
    """The attention-unet metadata stored in an exported ONNX file, after the file itself is checked:
    a regular file of a model's size, its weights inside it, standard operators only."""
    import onnx

    check_model_file(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's decode errors have many types
        raise InputError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "attention_unet" not in props:
        raise InputError(f"{path}: not an ONNX model exported by attention-unet (no metadata)")
    info = parse_info(props["attention_unet"], path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise InputError(f"{path}: its weights are in external data files; attention-unet exports keep them inside")
    custom = sorted({node.domain for node in proto.graph.node} - ONNX_DOMAINS)
    if custom:
        raise InputError(f"{path}: uses operators outside the ONNX standard ({', '.join(custom)})")
    return info


def edge_padded(batch: np.ndarray, multiple: int) -> np.ndarray:
    """An N x C x H x W batch as the traced graph can take it. The graph reflect-pads to a multiple
    of 2**depth, which fails where the padding reaches the side (an image 8 px high at depth 4);
    there the eager model replicates the edge instead (AttentionUNet._run), so that is done here,
    before the graph."""
    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h >= height or pad_w >= width:
        return np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return batch


def core_count() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_ARENA: list[bool] = []  # whether this process's ONNX Runtime environment holds the shared arena
_ARENA_LOCK = threading.Lock()


def shared_arena() -> bool:
    """Register one memory arena with ONNX Runtime's environment, once per process, for every
    session to draw on: the sessions of a model's views and of the models `--model auto` opens then
    hold one arena's peak between them, not one each. False where it cannot be registered (another
    library registered one first): sessions then keep their own arenas."""
    import onnxruntime as ort

    with _ARENA_LOCK:
        if not _ARENA:
            memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            try:
                ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
                _ARENA.append(True)
            except Exception:  # noqa: BLE001 - ORT's error types; the arena is an economy, not a need
                _ARENA.append(False)
        return _ARENA[0]


def onnx_session(model: str | Path | bytes, threads: int = 0, name: str | Path = "") -> Any:
    """An ONNX Runtime session on the CPU (``threads``: its intra-op threads, 0: every core), or
    one line naming the file. ``model``: a path, or the file's bytes (``name`` names it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # threads that wait sleep instead of spinning: predict runs images (and blocks) side by side,
    # and a spinning pool would take the cores the other image's post-processing needs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own error types for any graph it cannot run
        reason = str(exc).splitlines()[0][:200]
        raise InputError(f"{name or model}: ONNX Runtime cannot run it ({reason})") from None


class SessionRunner:
    """An ONNX model as a predict runner (:data:`~attention_unet.inference.tiles.Runner`): one
    batch on one session with every core; ``side_by_side`` runs independent batches (a tile's
    views) at once, each on its share of the cores. On 2 cores two single-thread runs of a 512-px
    tile take less time than the two one after the other on both cores (BENCHMARKS.md), and give
    the same numbers: the integer kernels do not depend on the thread count."""

    def __init__(self, path: str | Path, info: dict | None = None) -> None:
        self.path = Path(path)
        self.model = self.path.read_bytes()  # kept: a package's or an export's file may go once loaded
        self.session = onnx_session(self.model, name=path)
        if info is None:  # a shipped file's metadata, read from the session (no ``onnx`` import)
            info = parse_info(self.session.get_modelmeta().custom_metadata_map.get("attention_unet", ""), path)
        self.info = info
        self.multiple = 2 ** ModelConfig.from_dict(info["model"]).depth
        self._shares: dict[int, tuple[list[Any], ThreadPoolExecutor]] = {}
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        return self._run(self.session, batch)

    def _run(self, session: Any, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        height, width = batch.shape[-2:]
        logits = session.run(None, {"image": edge_padded(batch, self.multiple).astype(np.float32, copy=False)})[0]
        logits = logits[..., :height, :width]
        return 1.0 / (1.0 + np.exp(-logits)), []

    def side_by_side(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """Each batch's output, in order; ``min(len(batches), cores)`` of them run at once."""
        ways = min(len(batches), core_count())
        if ways < 2:
            return [self._run(self.session, batch) for batch in batches]
        sessions, pool = self._share(ways)
        return list(pool.map(self._run, [sessions[i % ways] for i in range(len(batches))], batches))

    def _share(self, ways: int) -> tuple[list[Any], ThreadPoolExecutor]:
        """``ways`` sessions that split the cores between them, and threads to run them (made once)."""
        with self._lock:
            if ways not in self._shares:
                threads = max(1, core_count() // ways)
                sessions = [onnx_session(self.model, threads, self.path) for _ in range(ways)]
                self._shares[ways] = sessions, ThreadPoolExecutor(ways, thread_name_prefix="attention-unet-view")
            return self._shares[ways]


def onnx_runner(path: str | Path, info: dict | None = None) -> Runner:
    """An exported .onnx file as a predict runner; ``info``: its metadata, if already read (else
    read and checked here, before a session is built)."""
    info = info or onnx_info(path)  # first: a file that is no model is one line, before a session is built
    return SessionRunner(path, info)


def shipped_onnx(path: Path) -> tuple[Runner, dict]:
    """A shipped ONNX file (the package's own: no checks, no ``onnx`` import) as a runner, and its
    metadata, read from the session."""
    runner = SessionRunner(path)
    return runner, runner.info
