"""Backbones (feature extractors), heads, and the network that joins them."""
