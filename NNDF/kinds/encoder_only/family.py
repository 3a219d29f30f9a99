"""An encoder family (BERT/DistilBERT, ViT): its loaded models are EncoderModels with the task of
the checkpoint's own head, and its backends are this kind's (backends.py).

    checkpoint -> EncoderModel (task, labels) -> encoder_spec (one graph, dynamic batch/seq)
        -> CompiledEncoder over any Session (ONNX Runtime, TensorRT) | TorchEncoder (PyTorch)
        -> answers.py turns outputs into answers (class, span, entities, embedding)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from NNDF.graphs.spec import GraphSpec
from NNDF.kinds.encoder_only.graphs import encoder_spec
from NNDF.kinds.encoder_only.model import EncoderModel, TaskModels
from NNDF.models.family import ModelFamily, Variant


@dataclass(kw_only=True)   # its defaults may then follow ModelFamily's required fields
class EncoderFamily(ModelFamily):
    """A ModelFamily of encoders: loaded models are EncoderModels, with their task.

    `samples` names, per task, the shipped file `accuracy` scores without --dataset-path;
    `calibration_data` the shipped file trt's int8 activation scales are calibrated on (training
    data, never the scored sample). Paths are relative to the family's folder."""

    samples: dict = field(default_factory=dict)
    calibration_data: dict = field(default_factory=dict)
    model_class: type | None = None     # None: TaskModels over the layouts (each checkpoint's own head)

    generates = False

    kind = "encoder_only"

    def __post_init__(self):
        if self.model_class is None:   # the Auto class of each checkpoint's own head
            self.model_class = TaskModels(self.layouts)

    def encoder_graph(self, loaded: EncoderModel) -> GraphSpec:
        """What export.py binds: the one graph of a loaded encoder."""
        return encoder_spec(loaded)

    def saved_tokenizer(self, source: str, **kwargs):
        """Image models have no tokenizer files: their config describes their preprocessing."""
        if all(layout.image_input for layout in self.layouts.values()):
            return None
        return super().saved_tokenizer(source, **kwargs)

    def _finish(self, variant: Variant, model, tokenizer, key: dict) -> EncoderModel:
        model.eval()
        config = model.config
        layout = self.layouts.get(config.model_type, self.layouts["default"])
        task = layout.task_of(type(model).__name__, variant.name)
        size = None
        if layout.image_input:
            s = config.image_size
            size = (s, s) if isinstance(s, int) else tuple(s)
        data = self.calibration_data.get(task)
        return EncoderModel(variant.name, model, tokenizer, key, self.max_positions(config), {}, variant.arch,
                            task=task, layout=layout, image_size=size, image_dirs=(self.folder,),
                            calibration_path=self.folder / data if data else None)
