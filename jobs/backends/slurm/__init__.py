"""Slurm: portal jobs as Slurm batch jobs through slurmrestd (API v0.0.38 and dbv0.0.38).

Cluster options (`Cluster.options`, checked by `check_options` at startup):

    url                   slurmrestd, e.g. http://127.0.0.1:6820 (required)
    api_version           "v0.0.38" (the accounting API is db<api_version>)
    jwt_key_file          the HS256 key of slurm.conf's AuthAltParameters=jwt_key=...; or
    jwt_key_env           an environment variable holding that key in base64 (one of the two).
                          The portal mints a token per cluster user (claims iat, exp, sun) and
                          sends X-SLURM-USER-NAME / X-SLURM-USER-TOKEN; the key is never stored.
    jwt_lifetime_seconds  token lifetime (1800); tokens are reused until a quarter is left
    query_user            the user that lists jobs and reads accounting ("slurm", the
                          SlurmUser; any user works while PrivateData does not hide jobs)
    shared_root           the shared filesystem as the cluster sees it; each cluster user has
                          <shared_root>/<user>/ (owned by them) and each job gets
                          <shared_root>/<user>/jobs/<uuid>/ with stdout.log, stderr.log, script
                          and output/ (the job's results, $GPUC_OUTPUT_DIR)
    shared_mount          where the portal host mounts that filesystem (default shared_root);
                          the portal only reads there
    partition             default partition (also default_partition / partitions with
                          per-partition limits, as read by jobs.validation)
    account               Slurm account to charge (default: the user's default account)
    gpu_types             GRES types, e.g. ["h100"]; GPUs are requested as gres gpu:<type>:<n>
    accounting            true (default) when slurmdbd runs: usage and forgotten jobs come from
                          it; false: from slurmctld's records only
    path                  PATH jobs start with (/usr/local/bin:/usr/bin:/bin)
    connect_timeout / read_timeout / pool_size   HTTP settings (5 s / 30 s / 16 connections)
    direct_overlap_seconds   how far each search for direct work reaches back before the last
                          one ended (120): covers slurmdbd's lag and clock differences
    max_gpus, max_cpus, max_memory_mb, max_time_minutes, max_array_tasks   limits

Behaviour worth knowing:
- Jobs run as the job's cluster account (refused: empty, root, slurm, nobody, or not a plain
  user name). The comment "gpuc:<uuid>" tags each Slurm job: find() and every read match it, so
  a reused Slurm job id is never mistaken for the portal's job.
- The submitted batch script is a small bash wrapper (see script.py) that creates and enters
  the job directory, redirects to stdout.log/stderr.log and execs the user's script (given
  "#!/bin/bash" when it has no interpreter line). Slurm's own output goes to /dev/null because
  Slurm cannot open files in a directory that does not exist yet. Memory is always sent
  (memory_per_node); GPUs go in `gres`; exit code 111 = job dir not creatable.
- Array tasks share the job directory and append to the same logs; their states fold into one
  portal state and their run times add up (UsageRecord.elapsed_seconds, tasks=1).
- poll() and find() make ONE GET /slurm/v0.0.38/jobs call (revalidated with ?update_time, 304
  when nothing changed); jobs slurmctld has forgotten (MinJobAge) are looked up in slurmdbd with
  one GET /slurmdb/dbv0.0.38/jobs?step=<ids> call. Slurm 22.05's dbv0.0.38 reports a plain
  non-zero exit as 0, so such a forgotten failed job has no exit code (said in its reason).
- usage() makes one slurmdbd call (elapsed, AllocTRES cpu/mem/gres/gpu); a job accounting has
  no final record of yet is measured from slurmctld's record (raw["source"] says which).
- direct_jobs() (work submitted outside the portal, e.g. sbatch on a login node) makes ONE
  GET /slurmdb/v0.0.38/jobs per sync tick: start_time=now-<N>seconds, end_time=now, state=<every
  final state>, which selects the jobs that ENDED in the window (slurmdbd ignores the state
  filter without an explicit end_time, and without a state filter it selects every job that
  overlapped the window, running ones included). The accounts are named in the query up to
  100 of them, beyond that filtered here. Each array task (123_4) and heterogeneous component
  (123+1) is its own record; jobs that never started are skipped; requeued runs are not
  charged (slurmdbd returns a job's last run only).
- Errors: connection failures, timeouts, 5xx without a Slurm errno, auth failures and transient
  Slurm errnos (communication, EAGAIN, controller busy, database down) raise BackendUnavailable;
  Slurm's refusals (bad partition, impossible resources, invalid account...) raise BackendError
  with Slurm's message. Cancelling an ended or forgotten job is not an error.
- Logs and results are read from shared_mount without following symbolic links (the job's user
  owns the directory), by offset, never whole.
"""

from __future__ import annotations

from jobs.backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
