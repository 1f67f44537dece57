"""What the command-line entry points share: ``--key=value`` overrides and ``--config_files``."""
from recbole_sada.errors import SADAInputError


def parse_with_overrides(parser, argv):
    """Parse the known flags; every other argument must be a ``--key=value`` config override.

    Returns:
        (args, config_files or None, overrides list)
    """
    args, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        raise SADAInputError(f"unrecognised arguments {bad}: overrides are written --key=value")
    files = args.config_files.strip().split() if getattr(args, "config_files", None) else None
    return args, files, list(rest)
