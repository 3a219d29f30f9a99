"""TensorRT optimization profiles: the sizes an engine accepts, derived from the run's sizes.

Both sides read them: the builder (NNDF/export/trt_engines.py) bakes them into an engine, and the
session (trt_session.py) picks a step's profile and refuses sizes outside every profile, naming
the flag to change (`AXIS_FIX`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from NNDF.base.config import TrtSettings
from NNDF.base.errors import UsageError
from NNDF.graphs.axes import BATCH, ENC, KEPT, PAST, RunSizes, SEQ, TOTAL

if TYPE_CHECKING:   # annotations only
    from NNDF.graphs.spec import GraphSpec


Range = tuple[int, int, int]  # min, opt, max
Profile = dict[str, Range]     # dynamic axis -> range, for one optimization profile

# What the user can change when a size falls outside an engine's profile.
AXIS_FIX = {
    BATCH: "change --batch-size/--num-beams, or build with --dynamic-batch and a wider --min/--max-dynamic-batch",
    SEQ: "use a shorter prompt or fewer new tokens, or raise --input-profile-max-len "
         "(without --use-cache the whole sequence is the input, so also --output-profile-max-len)",
    KEPT: "score a shorter text, or raise --input-profile-max-len",
    PAST: "generate fewer tokens or raise --output-profile-max-len",
    TOTAL: "generate fewer tokens or raise --output-profile-max-len",
    ENC: "use a shorter input, or raise --input-profile-max-len",
}


# --------------------------------------------------------------------------- profiles
def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(value, hi))


def spec_axes(spec: GraphSpec) -> set[str]:
    return {name for axes in (*spec.inputs.values(), *spec.outputs.values()) for name in axes.values()}


def profile_ranges(spec: GraphSpec, settings: TrtSettings, run: RunSizes, max_positions: int) -> dict[str, Range]:
    """min/opt/max of every dynamic axis `spec` uses over a whole run: every size some step feeds.
    `optimization_profiles` splits this into one profile per phase where phases differ.

    Rows fed to the engine are batch x beams. A prompt may be up to
    --input-profile-max-len tokens and --output-profile-max-len bounds the
    new tokens, so the whole sequence never exceeds prompt max + output max,
    nor the model's positions.
    """
    used = spec_axes(spec)
    unknown = used - set(AXIS_FIX)
    if unknown:
        raise ValueError(f"graph {spec.name} has dynamic axes {sorted(unknown)} with no TensorRT profile rule "
                         f"(known: {sorted(AXIS_FIX)})")
    beams = run.num_beams
    rows = run.batch_size * beams
    if settings.dynamic_batch:
        lo = (settings.min_dynamic_batch or 1) * beams
        hi = (settings.max_dynamic_batch or run.batch_size) * beams
        batch = (lo, _clamp(rows, lo, hi), hi)
    else:
        batch = (rows, rows, rows)
    prompt_max = min(settings.input_profile_max_len or max_positions, max_positions)
    total_max = max_positions
    if settings.output_profile_max_len:
        total_max = min(max_positions, prompt_max + settings.output_profile_max_len)
    if ENC in used:
        # Encoder-decoders: the prompt goes to the encoder; the decoder's own sequence starts at
        # one token and grows by the new tokens (all of them at once when scoring).
        out_max = min(settings.output_profile_max_len or max_positions, max_positions)
        dec_opt = _clamp(run.new_tokens // 2, 1, out_max)
        lengths = {ENC: (1, _clamp(run.prompt_len, 1, prompt_max), prompt_max),
                   SEQ: (1, 1 if PAST in used else dec_opt, out_max),
                   PAST: (0, dec_opt - 1, out_max - 1), TOTAL: (1, dec_opt, out_max)}
    elif PAST in used:
        # With a KV cache the prompt is fed once and every other step feeds one token on a
        # growing past, so the profile is tuned for a decode step halfway through generation.
        past_opt = _clamp(run.prompt_len + run.new_tokens // 2 - 1, 0, total_max - 1)
        lengths = {SEQ: (1, 1, prompt_max), PAST: (0, past_opt, total_max - 1),
                   TOTAL: (1, past_opt + 1, total_max)}
    else:
        # Without a cache every step feeds the whole sequence so far.
        opt = _clamp(run.prompt_len + run.new_tokens // 2, 1, total_max)
        lengths = {SEQ: (1, opt, total_max), TOTAL: (1, opt, total_max)}
    # Logits are kept for one position per step while generating, for all of them when scoring.
    ranges = {BATCH: batch, **lengths, KEPT: (1, 1, lengths[SEQ][2] if SEQ in lengths else 1)}
    return {axis: ranges[axis] for axis in AXIS_FIX if axis in used}


def optimization_profiles(spec: GraphSpec, settings: TrtSettings, run: RunSizes,
                          max_positions: int) -> tuple[Profile, ...]:
    """The engine's optimization profiles: one per phase whose shapes differ.

    With a KV cache, a generation feeds the prompt once on an empty past (context) and then one
    token at a time on a growing past (generation), as the original demo's engines were built.
    One profile spanning both would be tuned for neither: its opt shape is a single point, and
    TensorRT picks kernels for the opt shape. So each phase gets a profile with its own opt:
    context for a prompt of --input-seq-len on past 0, generation for one token halfway through
    the new tokens. The phases are disjoint on the past length (0 vs >= 1), so the runner picks
    a step's profile from its shapes. Graphs without a past have one profile (`profile_ranges`).
    """
    envelope = profile_ranges(spec, settings, run, max_positions)
    if PAST not in envelope:
        return (envelope,)
    seq_max, (_, past_opt, past_max) = envelope[SEQ][2], envelope[PAST]
    # decoder-only prompts are --input-seq-len long; an encoder-decoder's decoder starts from one token
    prompt_opt = 1 if ENC in envelope else _clamp(run.prompt_len, 1, seq_max)
    context = {**envelope, SEQ: (1, prompt_opt, seq_max), PAST: (0, 0, 0), TOTAL: (1, prompt_opt, seq_max)}
    if KEPT in envelope:   # scoring a text keeps every position's logits; generating, the last one's
        context[KEPT] = (1, 1, envelope[KEPT][2])
    if past_max < 1:       # never a second step: nothing to generate on a past
        return (_only(context, envelope),)
    past_opt = max(past_opt, 1)
    generation = {**envelope, SEQ: (1, 1, 1), PAST: (1, past_opt, past_max), TOTAL: (2, past_opt + 1, past_max + 1),
                  KEPT: (1, 1, 1)}
    return _only(context, envelope), _only(generation, envelope)


def _only(profile: Profile, envelope: Profile) -> Profile:
    return {axis: profile[axis] for axis in AXIS_FIX if axis in envelope}


def as_profiles(ranges: Profile | tuple[Profile, ...]) -> tuple[Profile, ...]:
    """One profile given as a dict, or several as a tuple: always a tuple."""
    return (ranges,) if isinstance(ranges, dict) else tuple(ranges)


def envelope_of(profiles: tuple[Profile, ...]) -> Profile:
    """Per axis, the sizes some profile accepts (lowest min, highest max; the first profile's opt)."""
    envelope: Profile = {}
    for profile in profiles:
        for axis, (lo, opt, hi) in profile.items():
            old = envelope.get(axis)
            envelope[axis] = (lo, opt, hi) if old is None else (min(lo, old[0]), old[1], max(hi, old[2]))
    return envelope


def check_sizes(ranges: dict[str, Range], sizes: dict[str, int], what: str) -> None:
    """UsageError naming the flag to change if any named size is outside its profile range.

    Axes are checked batch, seq, kept, past, total, so a too-long prompt is reported as such,
    not as the too-long sequence it leads to.
    """
    for axis in AXIS_FIX:
        if axis in sizes and axis in ranges:
            value, (lo, _, hi) = sizes[axis], ranges[axis]
            if not lo <= value <= hi:
                raise UsageError(f"{what} needs {axis}={value} but the TensorRT profile covers {lo}..{hi}",
                                 AXIS_FIX[axis])


def input_profile(name: str, dims: tuple[int, ...], axes: dict[int, str],
                  ranges: dict[str, Range]) -> tuple[tuple[int, ...], ...] | None:
    """(min, opt, max) shapes for one network input, or None if all its dims are static."""
    if all(d >= 0 for d in dims):
        return None
    shapes: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, dim in enumerate(dims):
        if dim >= 0:
            bounds = (dim, dim, dim)
        elif i in axes:
            bounds = ranges[axes[i]]
        else:
            raise UsageError(f"input {name} has a dynamic dimension {i} that the runner does not size",
                             "export the graph with this toolkit or make that dimension static")
        for shape, bound in zip(shapes, bounds):
            shape.append(bound)
    return tuple(tuple(s) for s in shapes)
