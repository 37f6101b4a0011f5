"""`python -m seqlevel` is the same as the `seqlevel` command."""

from seqlevel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
