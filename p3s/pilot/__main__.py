"""``python3 -m p3s.pilot [OPTIONS]``: run a pilot (see ``p3s.pilot.cli``)."""
from p3s.pilot.cli import main

main()
