"""Project storage: one folder per project on each cluster's shared filesystem
(<root>/projects/<organization slug>.<project slug>/, $GPUC_PROJECT_DIR in jobs), browsed,
uploaded to, downloaded from and filled with job results through the portal: streamed,
confined (fs.py) and held to a byte quota per project (models.ProjectStorage)."""
