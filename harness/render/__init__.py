"""Rendering at the edge, the only printers besides the command line: the console, tables,
progress, plots and listings."""
