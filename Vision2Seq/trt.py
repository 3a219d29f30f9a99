"""Image-to-text models on TensorRT: one engine per graph, all built for the same run.

The vision encoder and the cache generator run once per image, not per beam, so
their engines are profiled for --batch-size rows; the decoder's for batch x beams,
tuned for a prompt of one token ([DEC]; --input-seq-len means nothing here).
"""

from dataclasses import replace

from NNDF import trt_env
from NNDF.axes import RunSizes
from NNDF.pipeline import token_ids
from Seq2Seq.trt import trt_sessions

from Vision2Seq.backends import CompiledVision2Seq
from Vision2Seq.export import specs_for

PER_IMAGE = ("encoder", "cache_generator")


def make_backend(family, loaded, cfg, workdir):
    from NNDF.trt_build import optimization_profiles

    trt_env.require_tensorrt()   # before any export: a missing GPU should cost a second, not minutes
    specs = specs_for(family, loaded, cfg.generation.use_cache)
    run = RunSizes.of(cfg)
    per_image, decoder_run = replace(run, num_beams=1), replace(run, prompt_len=1)
    ranges = {name: optimization_profiles(spec, cfg.trt, per_image if name in PER_IMAGE else decoder_run,
                                          loaded.max_positions)
              for name, spec in specs.items()}
    sessions = trt_sessions(family, loaded, cfg, workdir, specs, ranges)
    return CompiledVision2Seq("trt", sessions, specs, token_ids(loaded), cfg.graph_precision)
