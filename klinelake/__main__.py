from klinelake.cli import main

main()
