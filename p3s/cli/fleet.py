"""`p3s-fleet`: start, count and stop pilots on many nodes (the implementation is ``p3s.fleet``)."""
from p3s.fleet.cli import main

if __name__ == "__main__":
    main()
