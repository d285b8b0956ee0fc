from relay.launch import main

main()
