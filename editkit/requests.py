"""The one request type every edit method and the evaluation runner share, with its validation."""

from __future__ import annotations

from dataclasses import dataclass

from editkit.errors import EditkitError


def fill_prompt(template: str, subject: str) -> str:
    """`template` with its `{}` replaced by `subject`; a clear error when there is no `{}`."""
    if "{}" not in template:
        raise EditkitError(f"prompt {template!r} has no {{}}; write the prompt with {{}} where the subject goes")
    if not subject.strip():
        raise EditkitError("subject is empty; pass the subject's name")
    return template.replace("{}", subject, 1)


@dataclass(frozen=True)
class EditRequest:
    """Rewrite `subject`'s attribute in `prompt` (which contains `{}`) from `target_true` to `target_new`."""

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    def __post_init__(self) -> None:
        fill_prompt(self.prompt, self.subject)
        if not self.target_new.strip():
            raise EditkitError(f"target_new is empty in request for {self.subject!r}; pass the new answer")

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return fill_prompt(self.prompt, self.subject)
