from p3s.cli.server import main

main()
