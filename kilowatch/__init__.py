"""kilowatch: edge metering agent and central collector."""

__version__ = "0.1.0"
