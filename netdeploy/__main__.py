from netdeploy.cli.main import main

raise SystemExit(main())
