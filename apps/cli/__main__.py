"""`python -m apps.cli`: the `eupe` command (as torchrun launches it)."""

from apps.cli import main

main()
