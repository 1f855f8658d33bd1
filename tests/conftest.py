"""Make ``tests/`` importable so tests can ``from helpers.videos import write_mp4``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
