#!/usr/bin/env python3
"""python run.py ACTION FAMILY [frameworks|onnxrt|trt ...] --variant V --working-dir D [flags]
   python run.py env      (versions, GPU, and what each backend is missing)

A thin layer over NNDF: flags -> a validated RunConfig (NNDF/cli.py), then the action performs
it (NNDF/actions/): load the model, open the backends, run, print and save the result. Bad
input ends in one line and exit 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class _Terminated(BaseException):
    """SIGTERM (timeout, a CI cancel, docker stop) as an exception, so half-written files are removed."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal

    from NNDF.base.errors import UsageError

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:   # not the main thread: leave signals to whoever runs us
        previous = None
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        from NNDF.base.progress import close_bars

        close_bars()   # a progress bar the error interrupted would share the error's line
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_libraries() -> None:
    """Library warnings (hub retries with tracebacks, tracer notes) would bury our one-line messages."""
    import logging
    import warnings

    for name in ("huggingface_hub", "transformers", "torch.onnx", "onnxruntime"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _main(argv: list[str]) -> int:
    from NNDF.actions import perform
    from NNDF.cli import parse_args

    cfg = parse_args(argv)
    if not cfg.verbose:
        _quiet_libraries()
    perform(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
