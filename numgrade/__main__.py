"""`python -m numgrade ...` runs the command line, like the `numgrade` console script."""

from .cli import entry

if __name__ == "__main__":
    entry()
