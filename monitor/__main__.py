import sys

try:
    from monitor.cli import main
except KeyboardInterrupt:  # (Ctrl-C while the modules load: as main() says it)
    print("market-monitor: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
