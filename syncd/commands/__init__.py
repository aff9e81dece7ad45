"""The `syncd` commands, one module per family (docs/cli.md is their contract). Each module
has `add_parsers(sub, common)` and `COMMANDS`; syncd/cli.py builds the parser from them
(cli.FAMILIES names each module's commands)."""
