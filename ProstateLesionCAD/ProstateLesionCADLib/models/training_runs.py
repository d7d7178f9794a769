"""What the training loops share: DataLoader worker processes that make the augmented
samples, a per-epoch `history.json`, and resumable checkpoints (weights, optimiser,
scheduler, RNG states, epoch).

Every sample is drawn from its own random stream, seeded from the training seed and
the sample's number, so the batches are the same whichever process makes them and
however many worker processes there are; a resumed run continues exactly where the
interrupted one stopped. Files are written beside their target and renamed onto it, so
an interruption never leaves a half-written history or checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import ParameterError
from ..output_files import atomic_file

MAX_DEFAULT_WORKERS = 8


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int | str | None) -> int:
    """Worker processes for sample generation: "auto" (or None) leaves one core to the
    training process itself; 0 makes the samples in the training process."""
    if workers is None or workers == "auto":
        return max(0, min(MAX_DEFAULT_WORKERS, available_cores() - 1))
    try:
        count = int(workers)
    except (TypeError, ValueError):
        raise ParameterError(f"--workers must be a number of processes or 'auto', got {workers!r}.") from None
    if count < 0:
        raise ParameterError(f"--workers must be 0 or more, got {count}.")
    return count


def sample_rng(stream: Sequence[int], number: int) -> np.random.Generator:
    """The random stream of sample `number` of a training run identified by `stream` (seed, ...)."""
    return np.random.default_rng([int(s) for s in stream] + [int(number)])


def _seed_worker(worker_id: int) -> None:
    """Global generators in a worker follow the loader's seed (libraries that use them stay reproducible)."""
    import random

    import torch

    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def sample_loader(dataset, first: int, stop: int, batch_size: int, workers: int, seed: int,
                  collate: Callable, device) -> Any:
    """Batches of samples first..stop-1 in order, made by `workers` processes (0: in this one),
    pinned for an asynchronous copy when the device is a GPU."""
    import torch

    options = {"num_workers": workers, "collate_fn": collate, "batch_size": batch_size,
               "sampler": range(first, stop), "pin_memory": getattr(device, "type", str(device)) == "cuda",
               # an own generator: creating the loader must not draw from the training's torch RNG
               "generator": torch.Generator().manual_seed(int(seed))}
    if workers:
        options.update(worker_init_fn=_seed_worker, prefetch_factor=4)
    return torch.utils.data.DataLoader(dataset, **options)


def write_history(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_file(path) as handle:
        json.dump(records, handle, indent=1)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    import torch

    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    import torch

    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    with atomic_file(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: Path, key: str) -> Optional[dict[str, Any]]:
    """The checkpoint at `path` when it was written by a run of the same configuration `key`."""
    import torch

    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or foreign: train from the start
        return None
    return payload if isinstance(payload, dict) and payload.get("key") == key else None


def cpu_state(module) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
