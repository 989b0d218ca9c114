import sys

from distill.cli import app

sys.exit(app())
