import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
import os, tempfile
os.environ.setdefault("GENSIS_CACHE_DIR", tempfile.mkdtemp(prefix="gensis-test-features-"))
