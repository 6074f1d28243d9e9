from vecshard_server.cli import main

main()
