from simpo_cli.cli import main

main()
