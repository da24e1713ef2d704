import sys

if sys.argv[1:2] == ["receive"]:  # a node's receiver: none of the server's imports (cli/receive)
    from netdeploy.cli.receive import main

    raise SystemExit(main(sys.argv[2:]))

from netdeploy.cli.main import main

raise SystemExit(main())
