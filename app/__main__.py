"""`python -m app`: the same command as the `kilowatch` script, for environments without it on PATH."""

from app.cli import app

if __name__ == "__main__":
    app()
