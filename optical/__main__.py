from optical.cli import main

main()
