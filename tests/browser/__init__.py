"""Browser tests of the built book (run: make browser)."""
