"""Backups (docs/backup.md): consistent online snapshots of collections to a directory or S3, and
restores onto any number of shard groups.

fence.py (the write fence of a cut), manifest.py (a backup's manifest and its checks), create.py
(taking a backup), restore.py (restoring one), service.py (the RPCs, and the jobs they run).
"""
