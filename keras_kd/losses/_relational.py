"""Helpers shared by the relational losses (SP, CC, RKD, PKT)."""


def check_relational_shapes(loss, teacher_shape, student_shape):
    """Raise `ValueError` naming both shapes unless they are (batch, ...)
    with a feature axis and the same batch size (when both are known)."""
    name = type(loss).__name__
    if len(teacher_shape) < 2 or len(student_shape) < 2:
        raise ValueError(
            f"{name} expects features of shape (batch, ...) with at least one "
            f"feature axis. Received: teacher shape {teacher_shape} and student "
            f"shape {student_shape}."
        )
    t_batch, s_batch = teacher_shape[0], student_shape[0]
    if t_batch is not None and s_batch is not None and t_batch != s_batch:
        raise ValueError(
            f"{name} relates the examples of one batch to each other, so the "
            "teacher and student features must hold the same examples. "
            f"Received: teacher shape {teacher_shape} and student shape "
            f"{student_shape} (batch {t_batch} vs {s_batch})."
        )
