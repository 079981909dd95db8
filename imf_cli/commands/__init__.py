"""One thin module per CLI command; each translates arguments and calls one library function."""
