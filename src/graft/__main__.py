"""``python -m graft`` (and ``torchrun -m graft``) run the CLI."""
from graft.cli import main

if __name__ == "__main__":
    main()
