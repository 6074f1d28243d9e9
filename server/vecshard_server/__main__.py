from vecshard_server.cli.main import main

main()
