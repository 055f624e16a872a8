__import__("mvit._moved", fromlist=["alias"]).alias(__name__, "mvit.runtime.lock")
