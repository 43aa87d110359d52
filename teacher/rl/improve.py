"""ReST-EM's M-step, the one step every teacher-RL loop shares (offline rounds, the online teacher, ARC specs):
supervised fine-tuning of a fresh adapter on the untouched teacher base, loss on the winners' completions only,
committed as an immutable teacher version. The E-steps differ by domain (what a sample is and how it is
scored), so they stay with their loops; what the teacher learns from winners is done once, here."""
from __future__ import annotations

from core.settings.student import TrainSettings
from student.train import TrainStats
from teacher.versions import TeacherStore, TeacherVersion


def teacher_train_settings(rl_train, **override) -> TrainSettings:
    """The inner-loop settings of a teacher update, from `rl.train` (ARC overrides the rate and epochs)."""
    base = dict(rank=rl_train.rank, alpha=rl_train.alpha, learning_rate=rl_train.learning_rate,
                epochs=rl_train.epochs, batch_size=rl_train.batch_size, max_seq_len=rl_train.max_seq_len)
    return TrainSettings(**(base | override))


def train_teacher_version(teacher, store: TeacherStore, pairs: list[tuple[str, str]], version: int,
                          parent: int | None, round_: int, trained_against: str, mean_reward: float,
                          settings: TrainSettings, seed: int, progress: bool = False,
                          desc: str | None = None) -> tuple[TeacherVersion, TrainStats]:
    """Train teacher-v`version` on (prompt, completion) `pairs` and commit it (it becomes the store's current
    version; a caller that judges it first moves `current` back). The teacher always learns on its untouched
    base: merged deltas are restored first."""
    if not pairs:
        raise ValueError("no winning samples to train the teacher on")
    if teacher.merged:
        teacher.restore_base()
    live = f"teacher-train-{version}"
    stats = teacher.train_adapter([], live, seed=seed, settings=settings, pairs=pairs, progress=progress,
                                  desc=desc or f"teacher-v{version}")
    try:
        v = store.commit(teacher, live, version, parent, round_, trained_against, len(pairs), mean_reward)
    finally:
        teacher.drop(live)
    return v, stats
