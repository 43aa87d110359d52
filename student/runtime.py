"""The models one process holds: the student (and the teacher, the same object unless configured apart)."""
from __future__ import annotations

from dataclasses import dataclass

from core.config import SealConfig
from core.runs import configure_process


@dataclass
class Runtime:
    cfg: SealConfig
    student: "object"  # student.adapters.Student
    model_name: str
    teacher: "object" = None  # the teacher's Student: the same object unless teacher.model names another base

    def __post_init__(self):
        if self.teacher is None:
            self.teacher = self.student


def open_runtime(cfg: SealConfig) -> Runtime:
    from student.adapters import Student
    from student.models import load_model

    configure_process(cfg)
    lm = load_model(cfg.model)
    if cfg.model.prepared:
        from student.prepared import fold_prepared

        lm.model = fold_prepared(lm.model, cfg.model.prepared)
        lm.model.eval()
    teacher = None
    if cfg.teacher.model is not None:  # a separate base model for the teacher
        tm = load_model(cfg.teacher.model)
        teacher = Student(tm.model, tm.tokenizer, cfg.train)
    return Runtime(cfg, Student(lm.model, lm.tokenizer, cfg.train), lm.name, teacher)
