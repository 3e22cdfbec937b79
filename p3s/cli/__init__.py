"""Command-line programs, one module per command."""
