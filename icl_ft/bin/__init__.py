"""Thin command-line binaries (absl.app + ml-collections config files)."""
