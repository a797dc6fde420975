"""wsruntime: the Workspace Runtime — one server per developer workspace."""

__version__ = "0.1.0"
