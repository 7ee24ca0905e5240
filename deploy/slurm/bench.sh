#!/usr/bin/env bash
# Raw submission rates of this cluster, for comparison with the portal's own
# submission benchmark (DESIGN.md quality bars).
#
#   deploy/slurm/bench.sh [N]        # default N=100 per method
#
# Prints human lines on stderr and one JSON line on stdout:
#   {"n": N, "rest_seq_per_s": .., "rest_par4_per_s": .., "sbatch_seq_per_s": ..}
# rest_seq: one client, one HTTP request per job (new connection each, JWT
# minted once); rest_par4: 4 concurrent clients; sbatch_seq: `runuser -u USER
# -- sbatch` in a loop. Jobs are trivial (`true`, 1 CPU, 64 MB, no GPU) and are
# cancelled afterwards.
set -euo pipefail
N=${1:-100}
ENV_FILE=${GPUC_SLURM_ENV:-/var/lib/gpucommons-slurm/env}
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
BENCH_USER=${BENCH_USER:-gpuc-demo}
export N BENCH_USER
NAME=gpuc-bench-$$

cleanup() { runuser -u "$BENCH_USER" -- scancel --name="$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

rest=$(NAME=$NAME python3 - <<'PY'
import base64, hashlib, hmac, json, os, sys, threading, time, urllib.request

URL = os.environ["SLURM_REST_URL"]
KEY = open(os.environ["SLURM_JWT_KEY_FILE"], "rb").read()
USER = os.environ["BENCH_USER"]
N = int(os.environ["N"])
NAME = os.environ["NAME"]
WD = os.path.join(os.environ["SLURM_SHARED_ROOT"], USER)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
h = b64(b'{"alg":"HS256","typ":"JWT"}')
p = b64(json.dumps({"iat": now, "exp": now + 3600, "sun": USER}).encode())
TOKEN = f"{h}.{p}." + b64(hmac.new(KEY, f"{h}.{p}".encode(), hashlib.sha256).digest())


def submit(i):
    body = {"script": "#!/bin/bash\ntrue\n", "job": {
        "name": NAME, "comment": f"bench-{i}", "memory_per_node": 64, "time_limit": 1,
        "current_working_directory": WD, "standard_output": "/dev/null",
        "environment": {"PATH": "/usr/bin:/bin"}}}
    req = urllib.request.Request(URL + "/slurm/v0.0.38/job/submit",
                                 data=json.dumps(body).encode(), method="POST")
    req.add_header("X-SLURM-USER-NAME", USER)
    req.add_header("X-SLURM-USER-TOKEN", TOKEN)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["job_id"]


t = time.time()
for i in range(N):
    submit(i)
seq = N / (time.time() - t)

errors = []
def worker(k):
    try:
        for i in range(k, N, 4):
            submit(N + i)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))
ths = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
t = time.time()
for th in ths: th.start()
for th in ths: th.join()
par = N / (time.time() - t)
if errors:
    print("parallel errors:", errors[:3], file=sys.stderr)
print(f"{seq:.1f} {par:.1f}")
PY
)
read -r rest_seq rest_par <<<"$rest"
echo "REST submit: sequential ${rest_seq}/s, 4 clients ${rest_par}/s" >&2
cleanup

wd=$SLURM_SHARED_ROOT/$BENCH_USER
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do
    runuser -u "$BENCH_USER" -- sbatch --quiet --job-name="$NAME" --mem=64 --time=1 \
        --chdir="$wd" --output=/dev/null --comment="bench-sb-$i" --wrap=true
done
end=$(date +%s.%N)
sb=$(python3 -c "print(f'{$N/($end-$start):.1f}')")
echo "sbatch (runuser) submit: ${sb}/s" >&2
printf '{"n": %s, "rest_seq_per_s": %s, "rest_par4_per_s": %s, "sbatch_seq_per_s": %s}\n' \
    "$N" "$rest_seq" "$rest_par" "$sb"
