"""segloc: where things are (boxes) and which pixels belong to them (masks), in 2D and 3D."""

__version__ = "0.1.0"
