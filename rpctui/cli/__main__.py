"""python -m rpctui.cli: the rpctui command."""

from rpctui.cli.main import main

raise SystemExit(main())
