"""``python -m video_nl ...`` is the same CLI as ``video-nl ...`` (so ``torchrun -m video_nl train`` works)."""
from .cli import main

if __name__ == "__main__":
    main()
