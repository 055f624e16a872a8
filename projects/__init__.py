"""Task projects built on the mvit core: classification, video, detection."""
