"""SafeLadder: post-train reasoning models so that safety and capability rise together."""

__version__ = "0.1.0"
