"""Command-line flags -> a validated RunConfig.

The parser is built from the flag table (NNDF/base/flags.py) and hands what it parsed to
`build_config`, where every check lives, with each action's rules from the actions table.
"""

from __future__ import annotations

import argparse

from NNDF.actions import ACTIONS, RULES
from NNDF.base.build_config import BACKENDS, build_config
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.base.flags import FLAGS

GROUP_TITLES = {
    "sampling": "sampling (HuggingFace's meaning; onnxrt and trt draw the same tokens for one --seed)",
    "serve": "serve (both servers; --api openai is the default)",
    "serve / export-triton": "serve --api triton / export-triton (Triton Inference Server)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line
        if message.startswith("argument --compare/-c: expected"):
            raise UsageError("--compare needs the backends to compare after it", "e.g. --compare frameworks onnxrt")
        raise UsageError(f"bad command line: {message}", "see `python run.py --help`")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix of a flag is not that flag (--max-queue must never mean --max-queue-delay-ms)
    p = _Parser(prog="run.py", allow_abbrev=False,
                description="Export HuggingFace models to ONNX / TensorRT, then measure and compare them.")
    p.add_argument("action", choices=tuple(ACTIONS))
    p.add_argument("family", nargs="?", help="model family, e.g. GPT2, T5, BART (list: optional)")
    p.add_argument("backends", nargs="*", help=f"one or more of {', '.join(BACKENDS)} (default: frameworks)")
    groups = {}
    for flag in FLAGS:
        if flag.group not in groups:
            groups[flag.group] = p.add_argument_group(GROUP_TITLES.get(flag.group, flag.group))
        kwargs = {"dest": flag.name, "help": flag.help, "default": flag.default}
        if flag.kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = flag.kind
            if flag.many:
                kwargs["nargs"] = "+"
            if flag.choices:
                kwargs["choices"] = flag.choices
            if flag.metavar:
                kwargs["metavar"] = flag.metavar
        groups[flag.group].add_argument(*flag.option_strings, **kwargs)
    return p


def parse_args(argv: list[str]) -> RunConfig:
    # intermixed: the demo's users write flags and backends in either order
    parsed = vars(build_parser().parse_intermixed_args(argv))
    parsed["backends"] = tuple(parsed["backends"])
    return build_config(parsed, RULES)
