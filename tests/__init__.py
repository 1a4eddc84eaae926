"""Tests for the stereo toolkit."""
