"""One module per schema revision; add one with a new `revision` and `down_revision`."""
