from netdeploy.cli import main

raise SystemExit(main())
