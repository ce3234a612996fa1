"""``python -m denseood ...`` (what ``torchrun -m denseood`` runs)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
