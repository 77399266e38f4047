#!/usr/bin/env bash
# Wall time of `ilha up` on fresh lab hosts, for several cluster sizes (release binaries).
#   bench/up.sh [SIZES...]        default: 3 6 12
# 3 hosts: 1 master+etcd, 2 workers; 6: the seed's layout (3 masters+etcd, 3 workers);
# N > 6: 3 masters+etcd and N-3 workers. Needs root and the lab (it wipes the lab's hosts).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-3 6 12}")
read -r -a sizes <<<"${sizes[*]}"

cargo build --release -q -p ilha -p ilha-bundler
cargo xtask artifacts serve >/dev/null
work=$(mktemp -d /tmp/ilha-bench-up.XXXXXX)
trap 'rm -rf "$work"' EXIT
target/release/ilha-bundler keygen --out "$work/keys" >/dev/null 2>&1
target/release/ilha-bundler build manifests/lab.yaml --key "$work/keys/ilha.key" \
  --out "$work/lab.tar.zst" --insecure-registry 127.0.0.1:5880 >/dev/null 2>&1

inventory() { # N -> inventory on stdout
  local n=$1 masters=3 i
  [ "$n" -lt 6 ] && masters=1
  for i in $(seq 1 "$n"); do echo "node$i ansible_host=10.88.0.$((10 + i)) ip=10.88.0.$((10 + i))"; done
  echo; echo "[kube_control_plane]"; for i in $(seq 1 $masters); do echo "node$i"; done
  echo; echo "[etcd]"; for i in $(seq 1 $masters); do echo "node$i"; done
  echo; echo "[kube_node]"; for i in $(seq $((masters + 1)) "$n"); do echo "node$i"; done
}

printf '%-7s %-22s %10s %14s %12s\n' hosts layout "up (s)" "second up (s)" "s per host"
for n in "${sizes[@]}"; do
  cargo xtask lab wipe >/dev/null 2>&1
  cargo xtask lab up -n "$n" >/dev/null 2>&1
  dir="$work/n$n"; mkdir -p "$dir"
  inventory "$n" >"$dir/inventory.ini"
  { printf 'cluster_name: bench%s\nstate_dir: state\n' "$n"; sed -n '/^kubelet_eviction_hard:/,$p' examples/lab/cluster.yaml; } >"$dir/cluster.yaml"
  args=("$work/lab.tar.zst" --pubkey "$work/keys/ilha.pub" -i "$dir/inventory.ini" -c "$dir/cluster.yaml"
        --ssh-config /var/lib/ilha-lab/ssh/ssh_config --known-hosts /var/lib/ilha-lab/ssh/known_hosts)
  start=$(date +%s.%N)
  target/release/ilha up "${args[@]}" >"$dir/up.log" 2>&1 || { echo "up failed on $n hosts, see:"; tail -20 "$dir/up.log"; exit 1; }
  mid=$(date +%s.%N)
  target/release/ilha up "${args[@]}" >"$dir/up2.log" 2>&1 || { echo "second up failed"; tail -20 "$dir/up2.log"; exit 1; }
  end=$(date +%s.%N)
  masters=3; [ "$n" -lt 6 ] && masters=1
  printf '%-7s %-22s %10.1f %14.1f %12.1f\n' "$n" "$masters masters, $((n - masters)) workers" \
    "$(awk "BEGIN{print $mid - $start}")" "$(awk "BEGIN{print $end - $mid}")" \
    "$(awk "BEGIN{print ($mid - $start) / $n}")"
done
cargo xtask lab wipe >/dev/null 2>&1
