"""The prompt grammar shared by every scene family.

A prompt is text a person can read and a model can tokenize::

    prompt    := family ":" clause (";" clause)*
    clause    := subject ("," attribute)*
    attribute := name number [unit]

for example ``balls: red agent ball, radius 0.15 m, x -0.50 m; blue ball, radius 0.18 m; goal, x 0.60 m``.
Each family says which subjects and attributes it knows, their units and their defaults, and turns
clauses into a frozen spec (``parse``) and back (``caption``). Numbers are written with two decimals;
samplers quantise to that grid, so ``parse_prompt(caption(spec)) == spec`` holds exactly.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")


class PromptError(ValueError):
    """An unparseable prompt. The message shows the grammar and the nearest valid form."""


@dataclass(frozen=True)
class Attribute:
    """One attribute a subject accepts: its name in the prompt, its unit and its default value."""

    name: str
    unit: str = ""
    default: float | None = None


@dataclass(frozen=True)
class Clause:
    """A parsed clause: the subject words and the attributes given for it, in prompt order."""

    subject: str
    attrs: tuple[tuple[str, float], ...] = ()

    def get(self, name: str, default: float | None = None) -> float:
        for key, value in self.attrs:
            if key == name:
                return value
        if default is None:
            raise PromptError(f"clause {self.subject!r} needs attribute {name!r}")
        return default


def fmt(value: float) -> str:
    """Format a number as the grammar writes it: two decimals, no negative zero."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def format_clause(subject: str, attrs: Sequence[tuple[Attribute, float]]) -> str:
    parts = [subject]
    for attr, value in attrs:
        parts.append(f"{attr.name} {fmt(value)}" + (f" {attr.unit}" if attr.unit else ""))
    return ", ".join(parts)


def format_prompt(family: str, clauses: Sequence[str]) -> str:
    return f"{family}: " + "; ".join(clauses)


def grammar_help(family: str, subjects: Mapping[str, Sequence[Attribute]], example: str) -> str:
    """A short description of one family's grammar, shown in every prompt error."""
    lines = [
        "prompt grammar:  <family>: <subject>, <attribute> <number> [unit], ...; <subject>, ...",
        f"family {family!r} knows these subjects and attributes:",
    ]
    for subject, attrs in subjects.items():
        names = ", ".join(f"{a.name} [{a.unit}]" if a.unit else a.name for a in attrs) or "(none)"
        lines.append(f"  {subject}: {names}")
    lines.append(f"example: {example}")
    return "\n".join(lines)


def nearest(word: str, options: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return found[0] if found else None


def split_family(text: str, families: Sequence[str]) -> tuple[str, str]:
    """Split ``"family: rest"``; raise with the known families if the head is not one of them."""
    if not isinstance(text, str):
        raise PromptError(f"a prompt must be a string, got {type(text).__name__}")
    head, sep, rest = text.strip().partition(":")
    family = head.strip().lower()
    if not sep or family not in families:
        guess = nearest(family.split(" ")[0] if family else "", families)
        hint = f" Did you mean {guess!r}?" if guess else ""
        raise PromptError(
            f"prompt {text!r} must start with a scene family and a colon, one of "
            f"{', '.join(f'{f}:' for f in families)}.{hint}"
        )
    return family, rest


def parse_clauses(
    body: str, subjects: Mapping[str, Sequence[Attribute]], family: str, example: str
) -> list[Clause]:
    """Parse the clauses after the family name against a family's subjects and attributes.

    ``subjects`` maps a subject pattern to its attributes; a pattern may start with ``<colour>``,
    meaning any single word (a colour name) followed by the rest of the pattern.
    """
    help_text = grammar_help(family, subjects, example)
    clauses: list[Clause] = []
    for raw in body.split(";"):
        raw = raw.strip().rstrip(".")
        if not raw:
            continue
        parts = [p.strip() for p in raw.split(",")]
        subject = " ".join(parts[0].lower().split())
        pattern = _match_subject(subject, subjects)
        if pattern is None:
            generic = [s.replace("<colour> ", "") for s in subjects]
            guess = nearest(subject, generic) or nearest(subject.split(" ")[-1], generic)
            hint = f" Nearest subject: {guess!r}." if guess else ""
            raise PromptError(f"unknown subject {subject!r} in clause {raw!r}.{hint}\n{help_text}")
        known = {a.name: a for a in subjects[pattern]}
        attrs: list[tuple[str, float]] = []
        for part in parts[1:]:
            words = part.lower().split()
            if len(words) < 2:
                raise PromptError(
                    f"attribute {part!r} in clause {raw!r} needs a name and a number\n{help_text}"
                )
            name, number, unit = words[0], words[1], " ".join(words[2:])
            if name not in known:
                guess = nearest(name, list(known))
                hint = f" Nearest: {guess!r}." if guess else ""
                raise PromptError(f"subject {subject!r} has no attribute {name!r}.{hint}\n{help_text}")
            if not _NUMBER.match(number):
                raise PromptError(f"attribute {name!r} needs a number, got {number!r}\n{help_text}")
            if unit and unit != known[name].unit:
                raise PromptError(
                    f"attribute {name!r} is in {known[name].unit or 'no unit'}, got unit {unit!r}\n{help_text}"
                )
            attrs.append((name, float(number)))
        clauses.append(Clause(subject=subject, attrs=tuple(attrs)))
    if not clauses:
        raise PromptError(f"prompt for {family!r} has no clauses\n{help_text}")
    return clauses


def _match_subject(subject: str, subjects: Mapping[str, Sequence[Attribute]]) -> str | None:
    for pattern in subjects:
        if pattern.startswith("<colour> "):
            words = subject.split(" ", 1)
            if len(words) == 2 and words[1] == pattern[len("<colour> ") :]:
                return pattern
        elif subject == pattern:
            return pattern
    return None


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Reject physically meaningless values with a message naming the bound."""
    if not (low <= value <= high):
        raise PromptError(f"{name} = {fmt(value)} is outside the allowed range [{fmt(low)}, {fmt(high)}]")
    return value
