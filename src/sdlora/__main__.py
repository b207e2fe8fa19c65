"""`python -m sdlora ...` (used by `accelerate launch -m sdlora train ...`)."""
import sys

from sdlora.cli import main

if __name__ == "__main__":
    sys.exit(main())
