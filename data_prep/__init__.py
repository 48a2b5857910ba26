"""Command-line data preparation: `python -m data_prep.prepare --help`."""
