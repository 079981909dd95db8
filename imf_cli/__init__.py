"""The imf command line: thin Typer commands over the kgdata and models libraries, and the TUI."""
