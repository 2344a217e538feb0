"""Exits 0 when every `name==version` given is installed at exactly that version in the
interpreter that runs it, 1 otherwise. Prints nothing. Used by scripts/deps/*.sh to skip an
install that has nothing to do: `<venv>/bin/python scripts/deps/pinned.py pkg==1.0 ...`."""

import sys
from importlib import metadata


def main(specs: list[str]) -> int:
    for spec in specs:
        name, version = spec.split("==")
        try:
            if metadata.version(name) != version:
                return 1
        except metadata.PackageNotFoundError:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
