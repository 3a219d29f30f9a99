#!/usr/bin/env python3
"""python run.py ACTION FAMILY [frameworks|onnxrt|trt ...] --variant V --working-dir D [flags]
   python run.py env      (versions, GPU, and what each backend is missing)

A thin layer over NNDF: parse and validate, load the model, open the backends,
run the action, print and save the result. Bad input ends in one line and exit 2.
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

    from NNDF.errors import UsageError

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:   # not the main thread: leave signals to whoever runs us
        previous = None
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        from NNDF.progress import close_bars

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
    from NNDF.errors import UsageError
    from NNDF.actions.common import save_json
    from NNDF.cli import parse_args
    from NNDF.pipeline import artifact_subdir, graph_sizes, make_backends
    from NNDF.preflight import check_inputs, check_loaded, run_memory
    from NNDF.progress import status
    from NNDF.registry import resolve
    from NNDF.workdir import WorkingDir

    if argv[:1] == ["env"]:   # no family, no model: what this machine has for each backend
        from NNDF.environment import report

        print(report())
        return 0
    cfg = parse_args(argv)
    if not cfg.verbose:
        _quiet_libraries()
    if cfg.action == "list":   # nothing to load
        from NNDF.actions import listing

        save_json(cfg.save_output_fpath, listing.run(cfg.family))
        return 0
    family, cfg = resolve(cfg)
    if cfg.action in ("serve", "export-triton"):   # long-running server / repository writer: own flows
        if not family.generates:
            raise UsageError(f"{cfg.action} serves generating models; {family.name} is an encoder family",
                             "use run, compare, accuracy, benchmark or chat")
        from NNDF import export_triton, serve

        result = serve.run(cfg, argv) if cfg.action == "serve" else export_triton.run(cfg, family)
        save_json(cfg.save_output_fpath, {"family": family.name, "variant": cfg.variant, **result})
        return 0
    if cfg.generation.num_beams > 1 and cfg.action == "accuracy":
        print("note: accuracy is teacher-forced, so --num-beams does not change it", file=sys.stderr)
    if cfg.generation.do_sample and cfg.action == "accuracy":
        print("note: accuracy is teacher-forced, so --do-sample does not change it", file=sys.stderr)
    workdir = WorkingDir(cfg.working_dir, verify=cfg.verify)
    check_inputs(cfg, family)               # the data files, before any training or export
    with status(f"loading {family.name} {cfg.variant}"):
        loaded = family.load(cfg)
    if cfg.cleanup:
        kept = workdir.cleanup(*artifact_subdir(family, loaded))
        if kept:
            print(f"note: --cleanup kept {len(kept)} cached artifact(s) that another run is building or using",
                  file=sys.stderr)
    if cfg.info:
        print(family.describe())
        print(f"loaded: {loaded.variant}, {sum(p.numel() for p in loaded.model.parameters()) / 1e6:.1f}M parameters, "
              f"{loaded.max_positions} positions; artifacts in {workdir.artifact_dir(*artifact_subdir(family, loaded))}")
        print(f"memory: this run needs {run_memory(cfg, family, loaded).describe()}")
    check_loaded(cfg, family, loaded)       # prompt lengths and peak memory, before any export
    backends = make_backends(family, loaded, cfg, workdir)
    if cfg.info:
        for name, size in graph_sizes(workdir, artifact_subdir(family, loaded)):
            print(f"graph {name}: {size / 1e6:.2f} MB")

    save_json(cfg.save_output_fpath, perform(cfg, family, loaded, backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
