"""`p3s-fleet`: start, count and stop pilots on many nodes (the implementation is ``p3s.fleet``)."""
from p3s.fleet.cli import build_parser, main  # noqa: F401 (build_parser: for the flags test)

if __name__ == "__main__":
    main()
