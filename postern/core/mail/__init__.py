"""Mail: parsing untrusted MIME, threading, and the one ingest path every backend feeds."""
