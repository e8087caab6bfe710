from hailo_immich_cli.cli import main

main()
