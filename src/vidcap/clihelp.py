"""Help text as every Unix tool writes it, whichever typer is installed.

typer 0.29 started showing an on/off flag as `--overwrite <bool>` (it takes no value) and a required argument
as `{manifest}` in the usage line. vidcap shows them the way click always did: `--overwrite` alone and
`caption [OPTIONS] MANIFEST`. Older typer versions lack these hooks and already print them so.
"""

from __future__ import annotations


def classic_help() -> None:
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return
    option = getattr(core, "TyperOption", None)
    argument = getattr(core, "TyperArgument", None)
    if option is not None and hasattr(option, "display_type_rich") and not getattr(option, "_vidcap", False):
        shown = option.display_type_rich

        def display_type_rich(self, ctx):
            if getattr(self, "is_flag", False) and self.metavar is None:
                return None  # a flag takes no value: nothing to show after it
            return shown(self, ctx)

        option.display_type_rich = display_type_rich
        option._vidcap = True
    if argument is not None and hasattr(argument, "_usage_display_name") and not getattr(argument, "_vidcap", False):

        def display_name_raw(self) -> str:
            return self.metavar if self.metavar is not None else (self.name or "").upper()

        def usage_name(self) -> str:
            name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
            return name + ("..." if self.nargs != 1 else "")

        if isinstance(getattr(argument, "display_name_raw", None), property):
            argument.display_name_raw = property(display_name_raw)
        argument._usage_display_name = usage_name
        argument._vidcap = True
