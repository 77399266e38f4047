#!/usr/bin/env bash
# Wall time of `ilha backup` of a 6-host cluster (the seed's layout) holding ~10k objects, and of
# `ilha restore` (etcd recovery) from that kit, with release binaries on fresh lab hosts.
#   bench/backup.sh [OBJECTS]      (default 10000 ConfigMaps, in 10 namespaces)
# Needs root and the lab (it wipes the lab's hosts). ILHA_BENCH_KEEP=1 keeps the logs and the kit.
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-10000}

cargo build --release -q -p ilha -p ilha-bundler
cargo xtask artifacts serve >/dev/null
work=$(mktemp -d /tmp/ilha-bench-backup.XXXXXX)
[ -n "${ILHA_BENCH_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
target/release/ilha-bundler keygen --out "$work/keys" >/dev/null 2>&1
target/release/ilha-bundler build manifests/lab.yaml --key "$work/keys/ilha.key" \
  --out "$work/lab.tar.zst" --insecure-registry 127.0.0.1:5880 >/dev/null 2>&1

cargo xtask lab wipe >/dev/null 2>&1
cargo xtask lab up -n 6 >/dev/null 2>&1
{ printf 'cluster_name: benchbackup\nstate_dir: state\n'; sed -n '/^kubelet_eviction_hard:/,$p' examples/lab/cluster.yaml; } >"$work/cluster.yaml"
cp examples/lab/inventory.ini "$work/inventory.ini"
hosts=(-i "$work/inventory.ini" -c "$work/cluster.yaml" --ssh-config /var/lib/ilha-lab/ssh/ssh_config --known-hosts /var/lib/ilha-lab/ssh/known_hosts)
timed() { # LABEL LOG COMMAND... -> prints the label and the seconds it took
  local label=$1 log=$2 start end
  shift 2
  start=$(date +%s.%N)
  "$@" >"$log" 2>&1 </dev/null || { echo "$label failed, see:"; tail -20 "$log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-52s %8.1f s\n' "$label" "$(awk "BEGIN{print $end - $start}")"
}
timed "up, 6 hosts" "$work/up.log" target/release/ilha up "$work/lab.tar.zst" --pubkey "$work/keys/ilha.pub" "${hosts[@]}"

# The objects: made on node1 with kubectl (one List per 500), as fast as the API takes them.
cargo xtask lab ssh 1 "set -e
k='kubectl --kubeconfig=/etc/kubernetes/admin.conf'
per=\$(( ($objects + 9) / 10 ))
for n in \$(seq 0 9); do \$k create namespace load-\$n >/dev/null; done
for n in \$(seq 0 9); do
  for start in \$(seq 0 500 \$((per - 1))); do
    { echo 'apiVersion: v1'; echo 'kind: List'; echo 'items:'
      for i in \$(seq \$start \$((start + 499 < per - 1 ? start + 499 : per - 1))); do
        echo \"- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm-\$i, namespace: load-\$n}, data: {k: value-\$i}}\"
      done; } | \$k create -f - >/dev/null &
  done
  wait
done
\$k get configmaps -A --no-headers | wc -l" | sed 's/^/configmaps in the cluster: /'

timed "backup, plain kit (--no-encrypt)" "$work/backup.log" \
  target/release/ilha backup --out "$work/kit.tar.zst" --no-encrypt "${hosts[@]}"
grep -E 'objects in|times:|etcd snapshot' "$work/backup.log" | sed 's/^/    /'
printf 'correct horse battery staple\n' >"$work/passphrase"
timed "backup, passphrase-encrypted kit" "$work/backup-sealed.log" \
  target/release/ilha backup --out "$work/sealed.tar.zst" --passphrase-file "$work/passphrase" "${hosts[@]}"
ls -l "$work/kit.tar.zst" "$work/sealed.tar.zst" | awk '{printf "    %s %.1f MiB\n", $NF, $5/1048576}'
timed "restore (etcd recovery on 3 members, 6 nodes Ready)" "$work/restore.log" \
  target/release/ilha restore "$work/kit.tar.zst" --yes "${hosts[@]}"
grep -E 'Ready in' "$work/restore.log" | sed 's/^/    /'
cargo xtask lab wipe >/dev/null 2>&1
