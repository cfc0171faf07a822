import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
