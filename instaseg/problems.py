"""What can be wrong with a dataset: warnings and errors that name the file, image and annotation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partialmethod


@dataclass(frozen=True)
class Problem:
    """One finding about a dataset. ``level`` is ``"error"`` (unusable) or ``"warning"`` (repaired/skipped)."""

    level: str
    message: str
    file: str | None = None
    image: str | None = None
    annotation: str | int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = ", ".join(
            f"{k} {_short(v)}"
            for k, v in (("file", self.file), ("image", self.image), ("annotation", self.annotation))
            if v is not None
        )
        return f"{self.level}: {self.message}" + (f" ({where})" if where else "")


def _short(value, limit: int = 160) -> str:
    """``value`` as text, its middle elided past ``limit`` characters (a 400-digit id, a hostile name);
    ``to_dict`` keeps the whole value."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...{text[-12:]} ({len(text)} characters)"


class DatasetError(Exception):
    """A dataset (or one file of it) cannot be used. The CLI prints it and exits with status 2."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        image: str | None = None,
        annotation: str | int | None = None,
    ):
        self.problem = Problem("error", message, file, image, annotation)
        super().__init__(str(self.problem)[len("error: ") :])


@dataclass
class ProblemLog:
    """Collects problems while a dataset is imported; importers report here instead of printing."""

    problems: list[Problem] = field(default_factory=list)

    def add(
        self,
        level: str,
        message: str,
        file: str | None = None,
        image: str | None = None,
        annotation: str | int | None = None,
    ) -> None:
        """Record a problem of ``level`` ``"error"`` or ``"warning"`` found in ``file``/``image``/``annotation``."""
        self.problems.append(Problem(level, message, file, image, annotation))

    # ``log.warn(message, file=..., image=..., annotation=...)``: a repaired or skipped item.
    warn = partialmethod(add, "warning")
    # ``log.error(message, file=..., image=..., annotation=...)``: an unusable item.
    error = partialmethod(add, "error")

    @property
    def has_errors(self) -> bool:
        return any(p.level == "error" for p in self.problems)
