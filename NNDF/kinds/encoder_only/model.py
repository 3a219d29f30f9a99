"""A loaded encoder (`EncoderModel`: its task, class names, image size) and the model class that
loads a checkpoint with its own head (`TaskModels`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass
from pathlib import Path

from NNDF.kinds.encoder_only.tasks import Task, auto_class
from NNDF.models.family import LoadedModel

if TYPE_CHECKING:   # annotations only
    from NNDF.kinds.encoder_only.graphs import EncoderLayout


class TaskModels:
    """The family's `model_class`: picks the Auto class of the checkpoint's own head, so loading
    from the hub, a --torch-dir or a shipped config keeps the head it was saved with."""

    def __init__(self, layouts: dict[str, EncoderLayout]):
        self.layouts = layouts

    def _task(self, config, what: str) -> Task:
        layout = self.layouts.get(config.model_type, self.layouts["default"])
        # a config without architectures (built in code) is the bare encoder where the family serves one
        bare = "Model" if "Model" in layout.heads else next(iter(layout.heads))
        architecture = (config.architectures or [layout.class_prefix + bare])[0]
        return layout.task_of(architecture, what)

    def from_config(self, config, **kwargs):
        return auto_class(self._task(config, f"config {config.model_type}")).from_config(config, **kwargs)

    def from_pretrained(self, source, **kwargs):
        from transformers import AutoConfig

        local = {"local_files_only": kwargs["local_files_only"]} if "local_files_only" in kwargs else {}
        config = AutoConfig.from_pretrained(source, **local)
        return auto_class(self._task(config, f"'{source}'")).from_pretrained(source, **kwargs)


@dataclass
class EncoderModel(LoadedModel):
    """A loaded encoder: its task, class names and how inputs are prepared."""

    task: Task = Task.EMBEDDINGS
    layout: EncoderLayout | None = None
    image_size: tuple[int, int] | None = None     # (height, width) of image models
    image_dirs: tuple[Path, ...] = ()             # where relative image paths are also looked up
    calibration_path: Path | None = None          # shipped data the trt int8 activation scales come from

    generates = False                             # actions dispatch on this (not a dataclass field)

    @property
    def labels(self) -> list[str]:
        """Class names by index (sequence, token or image classes); empty for embeddings and QA."""
        if self.task in (Task.EMBEDDINGS, Task.QUESTION_ANSWERING):
            return []
        id2label = self.config.id2label
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(self.config.num_labels)]

    @property
    def is_image(self) -> bool:
        return self.layout.image_input
