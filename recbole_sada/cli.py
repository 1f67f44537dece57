"""What the command-line entry points share: ``--key=value`` overrides, ``--config_files`` and ``--preset``."""
from recbole_sada.errors import InputError


def parse_with_overrides(parser, argv):
    """Parse the known flags; every other argument must be a ``--key=value`` config override.

    Returns:
        (args, config_files or None, overrides list)
    """
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        raise InputError(f"unrecognised arguments {bad}: overrides are written --key=value")
    keys = [a[2:].split("=", 1)[0] for a in rest]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InputError(f"--{twice[0]} is given more than once; give each override once")
    files = args.config_files.strip().split() if getattr(args, "config_files", None) else None
    if getattr(args, "preset", None):
        from recbole_sada.config import preset_file

        # the preset sits below the user's own config files: a file named by --config_files wins
        files = [preset_file(args.preset)] + (files or [])
    return args, files, list(rest)


def run_guarded(what, work):
    """Run ``work()`` for a command-line entry point: ``(None, its value)``; bad input prints one
    ``error:`` line and gives ``(2, None)``, Ctrl-C one ``interrupted:`` line and ``(130, None)``."""
    import sys

    try:
        return None, work()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2, None
    except KeyboardInterrupt:
        print(f"interrupted: {what} stopped (Ctrl-C); finished files and checkpoints are kept, nothing half-written",
              file=sys.stderr)
        return 130, None
