"""BLIP on PyTorch (HF generate)."""

from NNDF.api import Model
import Vision2Seq.frameworks

from BLIP.BLIPModelConfig import BLIP_FAMILY


def make_backend(loaded, cfg, workdir):
    return Vision2Seq.frameworks.make_backend(BLIP_FAMILY, loaded, cfg, workdir)


class BLIPHF(Model, family="BLIP", backend="frameworks"):
    """BLIP on PyTorch (HF generate), for scripts and notebooks; a prompt is `IMAGE` or `IMAGE | caption prefix`
    (keyword arguments are run.py's flags; see NNDF.api)."""
