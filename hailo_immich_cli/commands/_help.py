"""Help that reads like a classic Click CLI: `Usage: ... [OPTIONS] PATHS...`, `--db PATH`, bare flags.

Typer labels every parameter with its Python type (`<bool>` on flags, `<list[Path]>`,
`<int range> [x>=1]`) and wraps required arguments in braces in the usage line. Commands are built
with `PlainHelpCommand` instead, which shows one upper-case metavar per value and nothing on flags.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# Typer's type label -> the Click-style metavar shown instead.
_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE", "directory": "DIR"}


def _metavar(label: str | None) -> str:
    inner = re.sub(r"^<|>$", "", label or "").removesuffix(" range")
    inner = re.sub(r"^list\[(.*)\]$", r"\1", inner)
    return _METAVARS.get(inner.lower(), inner.upper() or "VALUE")


def _nothing(*_: Any, **__: Any) -> None:
    return None


def _plain(param: Any) -> None:
    """Give one parameter Click-style help labels (idempotent)."""
    if getattr(param, "_plain_help", False):
        return
    param._plain_help = True
    if getattr(param, "help", None):
        param.help = escape(param.help)  # brackets are text ("URL[,URL...]"), never rich markup
    if isinstance(param, TyperArgument):
        name = param.metavar or param.name.upper()
        param.metavar = name if param.nargs == 1 or name.endswith("...") else f"{name}..."
        param.display_type_rich = _nothing
    elif isinstance(param, TyperOption):
        if param.is_flag or param.count:
            param.display_type_rich = _nothing
        elif param.metavar is None:
            param.metavar = _metavar(param.display_type_rich(None))
        param._get_number_range_help_str = _nothing


class _PlainParams:
    """Mixin: every parameter a command or group lists gets Click-style labels."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            _plain(param)
        return params


class PlainHelpCommand(_PlainParams, TyperCommand):
    """A Typer command whose help shows Click-style metavars (see the module docstring)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces


class PlainHelpGroup(_PlainParams, TyperGroup):
    """The top-level group, labelled like its commands."""


def use_plain_help(app: typer.Typer) -> None:
    """Build every command of `app` that does not ask for its own class as a PlainHelpCommand."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = PlainHelpCommand
