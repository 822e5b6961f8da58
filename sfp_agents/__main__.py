"""``python -m sfp_agents ...`` (and ``accelerate launch -m sfp_agents ...``) runs the sfp CLI."""

from sfp_agents.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
