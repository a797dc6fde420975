"""Processes and terminals (API.md "Processes and terminals (extension)"): the engine under scripts and processes."""
