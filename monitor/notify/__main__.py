from monitor.notify.cli import main

raise SystemExit(main())
