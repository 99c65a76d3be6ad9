from klinelake.commands.main import main

main()
