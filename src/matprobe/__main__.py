"""`python -m matprobe ...` (what `torchrun -m matprobe extract ...` runs)."""

from matprobe.cli import app

app()
