"""Command-line tools of the video project."""
