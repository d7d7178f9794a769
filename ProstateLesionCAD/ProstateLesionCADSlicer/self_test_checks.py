"""Preconditions of the modules' self-tests: a step they exercise that is missing fails the test.

The self-tests (the ScriptedLoadableModuleTest classes) run the panels' steps on the
bundled sample inside Slicer. A test that skipped what this installation lacks could pass
having run nothing, so these checks raise instead, naming what is missing and why.
"""

from __future__ import annotations

from typing import Sequence


class StepUnavailable(AssertionError):
    """The self-test cannot exercise a step: the library does not offer it, or no model runs it."""


def require_steps(availability: dict[str, tuple[bool, str]], steps: Sequence[str]) -> None:
    """Fail unless every step is offered; `availability` is step -> (offered?, reason) as the panels use it."""
    missing = [f"{step} ({availability[step][1] if step in availability else 'not a step of this panel'})"
               for step in steps if not availability.get(step, (False, ""))[0]]
    if missing:
        raise StepUnavailable(f"The self-test exercises steps this installation does not offer: {'; '.join(missing)}.")


def require_models(packages: Sequence, what: str) -> list:
    """The installed model packages a step needs; fail when there are none."""
    if not packages:
        raise StepUnavailable(f"The self-test needs an installed {what} model, and none is installed.")
    return list(packages)
