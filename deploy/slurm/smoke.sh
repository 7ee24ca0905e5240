#!/usr/bin/env bash
# End-to-end check of the cluster started by up.sh: slurmrestd v0.0.38 submit /
# list / query / cancel, slurmdbd accounting via dbv0.0.38, and sbatch as a
# cluster user. Needs only bash + python3 stdlib. Prints PASS or FAIL.
set -euo pipefail

ENV_FILE=${GPUC_SLURM_ENV:-/var/lib/gpucommons-slurm/env}
[ -r "$ENV_FILE" ] || { echo "FAIL: $ENV_FILE missing (run deploy/slurm/up.sh)"; exit 1; }
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
SMOKE_USER=${SMOKE_USER:-gpuc-demo}
# Job working directory: <shared>/<user>/smoke, created (owned by the user) here,
# as Slurm does not create working directories.
SMOKE_DIR=$SLURM_SHARED_ROOT/$SMOKE_USER/smoke
install -d -o "$SMOKE_USER" -g "$(id -gn "$SMOKE_USER")" "$SMOKE_DIR"
export SMOKE_USER SMOKE_DIR

rc=0
python3 - <<'PY' || rc=1
import base64, hashlib, hmac, json, os, sys, time, urllib.error, urllib.request, uuid

URL = os.environ["SLURM_REST_URL"]
KEY = open(os.environ["SLURM_JWT_KEY_FILE"], "rb").read()
USER = os.environ["SMOKE_USER"]
WORKDIR = os.environ["SMOKE_DIR"]
GPU = os.environ["SLURM_GPU_TYPES"].split(",")[0]


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(user, ttl=300):
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iat": now, "exp": now + ttl, "sun": user}).encode())
    sig = hmac.new(KEY, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


TOKEN = jwt(USER)


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("X-SLURM-USER-NAME", USER)
    req.add_header("X-SLURM-USER-TOKEN", TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        fail(f"{method} {URL}{path}: {e}")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def ok(msg):
    print(f"  ok: {msg}")


def submit(name, script, comment, **extra):
    job = {
        "name": name,
        "partition": os.environ["SLURM_PARTITION"],
        "comment": comment,
        "current_working_directory": WORKDIR,
        "standard_output": f"{WORKDIR}/{name}-%j.out",
        "standard_error": f"{WORKDIR}/{name}-%j.err",
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "GPUC_SMOKE": comment},
        "memory_per_node": 256,
        "time_limit": 2,
    }
    job.update(extra)
    st, r = call("POST", "/slurm/v0.0.38/job/submit", {"script": script, "job": job})
    if st != 200 or not isinstance(r, dict) or not r.get("job_id") or r.get("errors"):
        fail(f"submit {name}: HTTP {st} {r}")
    return r["job_id"]


def ctld_job(job_id):
    st, r = call("GET", f"/slurm/v0.0.38/job/{job_id}")
    if st != 200 or not r.get("jobs"):
        fail(f"GET job/{job_id}: HTTP {st} {r}")
    return r["jobs"][0]


def wait_state(job_id, states, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = ctld_job(job_id)
        if j["job_state"] in states:
            return j
        time.sleep(0.5)
    fail(f"job {job_id} not in {states} after {timeout}s (last {j['job_state']} {j['state_reason']})")


st, r = call("GET", "/slurm/v0.0.38/ping")
if st != 200 or r["pings"][0]["ping"] != "UP":
    fail(f"ping: {st} {r}")
ok("ping UP, Slurm " + r["meta"]["Slurm"]["release"])

# 1. submit a 2-GPU job and wait for it
tag = str(uuid.uuid4())
script = "#!/bin/bash\necho \"smoke $GPUC_SMOKE user=$(id -un) gpus=$SLURM_JOB_GPUS\"\nsleep 1\n"
jid = submit("smoke", script, tag, gres=f"gpu:{GPU}:2")
ok(f"submitted job {jid} comment={tag}")
j = wait_state(jid, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"})
if j["job_state"] != "COMPLETED" or j["exit_code"] != 0:
    fail(f"job {jid} ended {j['job_state']} exit_code={j['exit_code']} reason={j['state_reason']}")
if "gres/gpu=2" not in j["tres_alloc_str"]:
    fail(f"tres_alloc_str lacks gres/gpu=2: {j['tres_alloc_str']}")
ok(f"job {jid} COMPLETED, tres_alloc_str={j['tres_alloc_str']}")

out_path = f"{WORKDIR}/smoke-{jid}.out"
content = open(out_path).read()
if f"smoke {tag} user={USER}" not in content:
    fail(f"unexpected stdout in {out_path}: {content!r}")
ok(f"stdout {out_path}: {content.strip()!r}")

# 2. list jobs, find ours by comment
st, r = call("GET", "/slurm/v0.0.38/jobs")
mine = [x for x in (r or {}).get("jobs", []) if x.get("comment") == tag]
if st != 200 or len(mine) != 1 or mine[0]["job_id"] != jid:
    fail(f"GET /jobs: HTTP {st}, found {len(mine)} jobs with comment {tag}")
ok(f"GET /jobs lists job {jid} by comment (user_name={mine[0]['user_name']})")

# 3. accounting record (slurmdbd may lag a moment behind slurmctld)
deadline = time.time() + 30
while True:
    st, r = call("GET", f"/slurmdb/v0.0.38/job/{jid}")
    rec = (r or {}).get("jobs", [None])[0] if st == 200 and isinstance(r, dict) and r.get("jobs") else None
    if rec and rec["state"]["current"] == "COMPLETED":
        break
    if time.time() > deadline:
        fail(f"slurmdb job {jid}: HTTP {st} {str(r)[:300]}")
    time.sleep(1)
alloc = {t["type"] + ("/" + t["name"] if t["name"] else ""): t["count"] for t in rec["tres"]["allocated"]}
if alloc.get("gres/gpu") != 2:
    fail(f"slurmdb tres.allocated has no gres/gpu=2: {alloc}")
if rec["comment"]["job"] != tag:
    fail(f"slurmdb comment.job {rec['comment']['job']!r} != {tag}")
ok(f"slurmdb job {jid}: state={rec['state']['current']} elapsed={rec['time']['elapsed']}s "
   f"tres.allocated gres/gpu={alloc['gres/gpu']} mem={alloc.get('mem')} cpu={alloc.get('cpu')}")

# 4. submit a sleeper and cancel it
tag2 = str(uuid.uuid4())
jid2 = submit("smoke-cancel", "#!/bin/bash\nsleep 600\n", tag2, gres=f"gpu:{GPU}:1")
wait_state(jid2, {"RUNNING", "PENDING"})
st, r = call("DELETE", f"/slurm/v0.0.38/job/{jid2}")
if st != 200 or r.get("errors"):
    fail(f"DELETE job/{jid2}: HTTP {st} {r}")
j2 = wait_state(jid2, {"CANCELLED"}, timeout=30)
ok(f"job {jid2} cancelled via DELETE -> {j2['job_state']}")
st, r = call("DELETE", f"/slurm/v0.0.38/job/{jid2}")
ok(f"second DELETE of finished job {jid2}: HTTP {st} errors={r.get('errors') if isinstance(r, dict) else r}")
PY

if [ $rc = 0 ]; then
    # 5. sbatch as the cluster user
    dir=$SMOKE_DIR
    tag=$(python3 -c 'import uuid; print(uuid.uuid4())')
    out=$(runuser -u "$SMOKE_USER" -- sbatch --parsable --job-name=smoke-sbatch \
        --partition="$SLURM_PARTITION" --gres="gpu:${SLURM_GPU_TYPES%%,*}:1" --mem=128 \
        --time=2 --comment="$tag" --chdir="$dir" --output="$dir/smoke-sbatch-%j.out" \
        --wrap='echo sbatch-ok $(id -un)' 2>&1) || { echo "FAIL: sbatch: $out"; rc=1; }
    if [ $rc = 0 ]; then
        jid=${out%%;*}
        echo "  ok: sbatch as $SMOKE_USER -> job $jid"
        for _ in $(seq 1 120); do
            state=$(squeue -h -j "$jid" -o %T 2>/dev/null || true)
            [ -z "$state" ] || [ "$state" = COMPLETED ] && break
            sleep 0.5
        done
        if grep -qx "sbatch-ok $SMOKE_USER" "$dir/smoke-sbatch-$jid.out" 2>/dev/null; then
            echo "  ok: sbatch job $jid output: $(cat "$dir/smoke-sbatch-$jid.out")"
        else
            echo "FAIL: sbatch job $jid output missing/wrong (state ${state:-gone})"
            rc=1
        fi
    fi
fi

if [ $rc = 0 ]; then echo PASS; else echo FAIL; fi
exit $rc
