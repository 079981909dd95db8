"""The ``imf explore`` terminal UI: :class:`~imf_cli.tui.app.ExploreApp` and its widgets.

Importing this package imports Textual, so only ``imf explore`` (inside its body) and tests do.
"""
