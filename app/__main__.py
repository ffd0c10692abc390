"""`python -m kilowatch`: the same command as the `kilowatch` script, for environments without it on PATH."""

from kilowatch.cli import app

if __name__ == "__main__":
    app()
