"""Progress for long work: a tqdm bar for loops, a one-line status for single steps."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    yield from tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def close_bars() -> None:
    """Close (and so clear) every open bar, e.g. one an error left mid-loop, before printing more."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


@contextlib.contextmanager
def status(message: str):
    """Print `message ...` before slow work and its duration after it, on stderr."""
    print(f"{message} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"{message}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
