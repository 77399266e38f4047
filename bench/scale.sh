#!/usr/bin/env bash
# Wall time of `ilha scale` adding one worker to a running 6-host cluster (the seed's layout), and
# of `ilha remove-node` taking it out again (release binaries, fresh lab hosts).
#   bench/scale.sh
# Needs root and the lab (it wipes the lab's hosts). ILHA_BENCH_KEEP=1 keeps the logs (scale.log has
# the time spent before the first change, "prepared elapsed=").
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p ilha -p ilha-bundler
cargo xtask artifacts serve >/dev/null
work=$(mktemp -d /tmp/ilha-bench-scale.XXXXXX)
[ -n "${ILHA_BENCH_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
target/release/ilha-bundler keygen --out "$work/keys" >/dev/null 2>&1
target/release/ilha-bundler build manifests/lab.yaml --key "$work/keys/ilha.key" \
  --out "$work/lab.tar.zst" --insecure-registry 127.0.0.1:5880 >/dev/null 2>&1

inventory() { # WORKERS... -> the seed's layout plus the given extra workers, on stdout
  local i
  for i in 1 2 3 4 5 6 "$@"; do echo "node$i ansible_host=10.88.0.$((10 + i)) ip=10.88.0.$((10 + i))"; done
  printf '\n[kube_control_plane]\nnode1\nnode2\nnode3\n\n[etcd]\nnode1\nnode2\nnode3\n\n[kube_node]\nnode4\nnode5\nnode6\n'
  for i in "$@"; do echo "node$i"; done
}

cargo xtask lab wipe >/dev/null 2>&1
cargo xtask lab up -n 7 >/dev/null 2>&1
{ printf 'cluster_name: benchscale\nstate_dir: state\n'; sed -n '/^kubelet_eviction_hard:/,$p' examples/lab/cluster.yaml; } >"$work/cluster.yaml"
ssh_args=(--ssh-config /var/lib/ilha-lab/ssh/ssh_config --known-hosts /var/lib/ilha-lab/ssh/known_hosts)
bundle_args=("$work/lab.tar.zst" --pubkey "$work/keys/ilha.pub")
inventory >"$work/six.ini"
inventory 7 >"$work/seven.ini"
timed() { # LABEL LOG COMMAND... -> prints the label and the seconds it took
  local label=$1 log=$2 start end
  shift 2
  start=$(date +%s.%N)
  "$@" >"$log" 2>&1 </dev/null || { echo "$label failed, see:"; tail -20 "$log"; exit 1; }
  end=$(date +%s.%N)
  printf '%-44s %8.1f s\n' "$label" "$(awk "BEGIN{print $end - $start}")"
}
timed "up, 6 hosts (3 masters+etcd, 3 workers)" "$work/up.log" \
  target/release/ilha up "${bundle_args[@]}" -i "$work/six.ini" -c "$work/cluster.yaml" "${ssh_args[@]}"
timed "scale: +1 worker (node7) to the 6-host cluster" "$work/scale.log" \
  env RUST_LOG=ilha=debug target/release/ilha scale "${bundle_args[@]}" -i "$work/seven.ini" -c "$work/cluster.yaml" "${ssh_args[@]}"
grep -A8 '^Hosts changed:' "$work/scale.log" | sed 's/^/    /'
timed "remove-node node7 (drain, delete, reset)" "$work/remove.log" \
  target/release/ilha remove-node node7 --yes -i "$work/seven.ini" -c "$work/cluster.yaml" "${ssh_args[@]}"
cargo xtask lab wipe >/dev/null 2>&1
