"""Untrimmed videos for temporal action detection: annotation readers and a synthetic benchmark."""
