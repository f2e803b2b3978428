from shiftad.cli import main

raise SystemExit(main())
