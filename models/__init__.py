"""Stereo networks, their registry and their published weights."""
