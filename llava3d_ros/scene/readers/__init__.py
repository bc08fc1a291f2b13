"""Readers for recorded posed RGB-D sequences."""
