//! The script that takes off a host everything ilha installed, and what it may and may not touch.
//!
//! One bash script, two modes: [`Mode::Remove`] acts, [`Mode::DryRun`] prints what it would do and
//! changes nothing. Every change goes through one shell function (`act`), so the dry run lists
//! exactly the actions the real run takes. The script goes on past a failed action, prints it on
//! stderr (`FAILED: ...`) and exits non-zero at the end.
//!
//! What it removes is named, never guessed: ilha's units, the files listed in
//! [`INSTALLED_FILES`], the directories ilha and its components own ([`OWNED_DIRS`]), the pods'
//! processes and mounts, the `cni0` bridge and its veths, the routes ilha's routes script added,
//! the iptables chains named `KUBE-*`/`CNI-*` and only the rules that jump to them. With the
//! host's pre-install record it keeps anything the record shows was there before (a directory's
//! earlier content, a mount, an interface, a route) and puts recorded kernel settings back.
//! Interfaces, rules, units and processes of other names are never touched, nor is sshd.
//!
//! A host without [`ILHA_DIR`] is left alone: ilha makes it first and the script removes it last,
//! only after a run without failure, so a never-installed host is not touched and a failed reset
//! can be run again.

use std::fmt::Write as _;

use super::hardening::{
    AUDIT_LOG_DIR, AUDIT_LOG_PARENT, ETCD_USER, ETCD_USER_MADE, KERNEL_DEFAULTS_CONF,
};
use super::paths::*;
use super::record::HostRecord;
use super::render::APIPROXY_BINARY;
use crate::ssh::shell_quote;

/// ilha's systemd units, in the order they are stopped: the snapshot timer first (it must not
/// fire while etcd goes), then the kubelet (so it starts no more pods), containerd last.
pub const UNITS: &[&str] = &[
    crate::backup::schedule::TIMER,
    crate::backup::schedule::SERVICE,
    "kubelet.service",
    "kube-proxy.service",
    "ilha-apiproxy.service",
    "kube-scheduler.service",
    "kube-controller-manager.service",
    "kube-apiserver.service",
    "etcd.service",
    "ilha-routes.service",
    "containerd.service",
];

/// Directories that hold only what ilha and the components it installs put there. Removed whole
/// (a mount point is emptied instead); when the pre-install record shows one existed, only the
/// entries the record does not list go.
pub const OWNED_DIRS: &[&str] = &[
    KUBERNETES_DIR,
    "/etc/containerd",
    CNI_CONF_DIR,
    CNI_BIN_DIR,
    ETCD_DATA_DIR,
    KUBELET_DIR,
    KUBE_PROXY_DIR,
    "/var/lib/containerd",
    "/var/lib/cni",
    "/run/containerd",
    // containerd's `opt` plugin makes it at start.
    "/opt/containerd",
    // The kubelet's volume plugin directory, made at start.
    "/usr/libexec/kubernetes",
    "/var/log/pods",
    "/var/log/containers",
    // kube-apiserver's audit log (hardening.audit_log).
    AUDIT_LOG_DIR,
    ILHA_DIR,
];

/// Parents that `mkdir -p` of an owned directory may have made: removed when empty and absent
/// from the record (never without a record: nothing says they were ilha's).
pub const PARENT_DIRS: &[&str] = &["/etc/cni", "/opt/cni", "/run/netns", AUDIT_LOG_PARENT];

/// Directories ilha puts single files into, among files of others: watched by the record, never
/// removed.
pub const SHARED_DIRS: &[&str] = &[
    BIN_DIR,
    "/usr/local/sbin",
    UNIT_DIR,
    "/etc/systemd/system/multi-user.target.wants",
    "/etc/sysctl.d",
];

/// Where pods, containers and their network namespaces are mounted. Mounts below these are
/// undone, deepest first (and these themselves when the record shows they were not mounts).
pub const MOUNT_ROOTS: &[&str] = &[
    KUBELET_DIR,
    "/var/lib/containerd",
    "/run/containerd",
    "/run/netns",
];

/// Files of an install made before ilha kept [`INSTALLED_FILES`] (removed only when that list is
/// missing and the host has a journal). CNI plugins and configs are in owned directories.
const LEGACY_FILES: &[&str] = &[
    "/usr/local/bin/etcd",
    "/usr/local/bin/etcdctl",
    "/usr/local/bin/etcdutl",
    "/usr/local/bin/kube-apiserver",
    "/usr/local/bin/kube-controller-manager",
    "/usr/local/bin/kube-scheduler",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/kubelet",
    "/usr/local/bin/kube-proxy",
    "/usr/local/bin/containerd",
    "/usr/local/bin/containerd-shim-runc-v2",
    "/usr/local/bin/ctr",
    RUNC,
    APIPROXY_BINARY,
    ROUTES_SCRIPT,
    "/etc/sysctl.d/90-ilha.conf",
    KERNEL_DEFAULTS_CONF,
];

/// Listed files are removed only under these (a corrupt list cannot point the script at /home).
const FILE_ROOTS: &[&str] = &["/usr/local/", "/etc/", "/opt/cni/", "/var/lib/"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Remove everything.
    Remove,
    /// Print what [`Mode::Remove`] would do (`would ...` lines); change nothing.
    DryRun,
}

fn array(name: &str, items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let words: Vec<String> = items
        .into_iter()
        .map(|item| shell_quote(item.as_ref()))
        .collect();
    format!("{name}=({})\n", words.join(" "))
}

fn set(name: &str, items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let words: Vec<String> = items
        .into_iter()
        .map(|item| format!("[{}]=1", shell_quote(item.as_ref())))
        .collect();
    format!("declare -A {name}=({})\n", words.join(" "))
}

/// The teardown script for one host, given its pre-install record (if it has one).
pub fn script(record: Option<&HostRecord>, mode: Mode) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "DRY_RUN={}", u8::from(mode == Mode::DryRun));
    let _ = writeln!(s, "HAVE_RECORD={}", u8::from(record.is_some()));
    let _ = writeln!(s, "BIN_DIR={}", shell_quote(BIN_DIR));
    let _ = writeln!(s, "UNIT_DIR={}", shell_quote(UNIT_DIR));
    let _ = writeln!(s, "INSTALLED_FILES={}", shell_quote(INSTALLED_FILES));
    let _ = writeln!(s, "JOURNAL={}", shell_quote(JOURNAL));
    let _ = writeln!(s, "ILHA_DIR={}", shell_quote(ILHA_DIR));
    let _ = writeln!(s, "ROUTES_SCRIPT={}", shell_quote(ROUTES_SCRIPT));
    let _ = writeln!(s, "ETCD_USER={}", shell_quote(ETCD_USER));
    let _ = writeln!(s, "ETCD_USER_MADE={}", shell_quote(ETCD_USER_MADE));
    s.push_str(&array("UNITS", UNITS));
    s.push_str(&array("OWNED_DIRS", OWNED_DIRS));
    s.push_str(&array("PARENT_DIRS", PARENT_DIRS));
    s.push_str(&array("MOUNT_ROOTS", MOUNT_ROOTS));
    s.push_str(&array("LEGACY_FILES", LEGACY_FILES));
    s.push_str(&array("FILE_ROOTS", FILE_ROOTS));
    let none = Vec::<&str>::new();
    match record {
        Some(r) => {
            s.push_str(&set("EXISTED", r.paths()));
            s.push_str(&set("KEPT_MOUNTS", r.mounts()));
            s.push_str(&set("KEPT_LINKS", r.links()));
            s.push_str(&array("RECORD_ROUTES", r.routes()));
            s.push_str(&array(
                "SYSCTLS",
                r.sysctls().map(|(key, value)| format!("{key}={value}")),
            ));
        }
        None => {
            s.push_str(&set("EXISTED", &none));
            s.push_str(&set("KEPT_MOUNTS", &none));
            s.push_str(&set("KEPT_LINKS", &none));
            s.push_str(&array("RECORD_ROUTES", &none));
            s.push_str(&array("SYSCTLS", &none));
        }
    }
    s.push_str(BODY);
    s
}

/// The actions a run printed: `done: ...` lines of a removal, `would ...` lines of a dry run.
pub fn actions(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("done: ") || l.starts_with("would "))
        .collect()
}

/// The script after its inputs. Bash (arrays, `declare -A`, process substitution); counters are
/// only changed in the main shell, never in a pipeline's subshell.
const BODY: &str = r#"
set +e -u -o pipefail
export LC_ALL=C
failures=0
actions=0

# act WHAT COMMAND...: runs COMMAND (in a dry run, only says it would), reports, goes on.
act() {
  local what=$1 out
  shift
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would %s\n' "$what"
    return 0
  fi
  if out=$("$@" 2>&1); then
    actions=$((actions + 1))
    printf 'done: %s\n' "$what"
  else
    failures=$((failures + 1))
    printf 'FAILED: %s: %s\n' "$what" "$(printf '%s' "$out" | tr '\n' ' ')" >&2
  fi
}
fail() {
  failures=$((failures + 1))
  printf 'FAILED: %s\n' "$1" >&2
}
existed() { [ -n "${EXISTED[$1]+x}" ]; }
# Paths already acted on (so a dry run lists each once, as the real run acts once).
declare -A handled=()
is_handled() {
  local path=$1
  while [ -n "$path" ]; do
    [ -n "${handled[$path]+x}" ] && return 0
    path=${path%/*}
  done
  return 1
}
unit_state() { systemctl show -p ActiveState --value "$1" 2>/dev/null; }

# The list of files ilha put here, read before its directory goes.
if [ -f "$INSTALLED_FILES" ]; then
  installed=$(sort -u "$INSTALLED_FILES")
elif [ -f "$JOURNAL" ]; then
  # Installed before ilha kept the list.
  installed=$(printf '%s\n' "${LEGACY_FILES[@]}")
else
  installed=
fi
if [ ! -d "$ILHA_DIR" ]; then
  # ilha makes it before anything else and a reset removes it last, after everything else
  # went: without it nothing here is known to be ilha's (a kubelet or a containerd found on
  # this host belongs to someone else).
  echo "nothing to do: no $ILHA_DIR (ilha has not installed anything here, or a reset completed)"
  exit 0
fi

# 1. ilha's services, the kubelet first.
for unit in "${UNITS[@]}"; do
  [ -e "$UNIT_DIR/$unit" ] || [ -L "$UNIT_DIR/$unit" ] || continue
  state=$(unit_state "$unit")
  if [ -n "$state" ] && [ "$state" != inactive ]; then
    act "stop $unit" systemctl stop "$unit"
  fi
  if [ "$(systemctl is-enabled "$unit" 2>/dev/null)" = enabled ]; then
    act "disable $unit" systemctl disable --quiet "$unit"
  fi
done

# 2. Pods and the containerd shims that outlive containerd (KillMode=process).
pod_pids() {
  find /sys/fs/cgroup -path '*kubepods*' -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}
shim_pids() {
  local dir exe
  for dir in /proc/[0-9]*; do
    [ "$(cat "$dir/comm" 2>/dev/null)" = containerd-shim ] || continue
    exe=$(readlink "$dir/exe" 2>/dev/null)
    case "$exe" in "$BIN_DIR"/*) printf '%s\n' "${dir#/proc/}" ;; esac
  done
}
running() {
  local pid state
  for pid in "$@"; do
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
    [ -n "$state" ] && [ "$state" != Z ] && return 0
  done
  return 1
}
kill_and_wait() {
  local i
  kill -KILL "$@" 2>/dev/null
  for i in $(seq 1 100); do
    running "$@" || return 0
    sleep 0.1
  done
  echo "still running after 10 s: $*"
  return 1
}
pods=$(pod_pids | tr '\n' ' ')
if [ -n "${pods// /}" ]; then
  # shellcheck disable=SC2086
  act "kill the pods' processes ($(wc -w <<<"$pods"))" kill_and_wait $pods
fi
shims=$(shim_pids | tr '\n' ' ')
if [ -n "${shims// /}" ]; then
  # shellcheck disable=SC2086
  act "kill containerd-shim processes ($(wc -w <<<"$shims"))" kill_and_wait $shims
fi
state=$(unit_state kubepods.slice)
if [ -n "$state" ] && [ "$state" != inactive ]; then
  act "stop kubepods.slice" systemctl stop kubepods.slice
fi

# 3. Network namespaces of pods, then every mount under the kubelet's and containerd's
# directories, deepest first; mounts the record shows were there before stay.
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] || continue
  act "delete network namespace ${ns##*/}" ip netns delete "${ns##*/}"
done
mount_targets() {
  local target
  while read -r _ _ _ _ target _; do printf '%b\n' "$target"; done < /proc/self/mountinfo
}
to_unmount() {
  local target root
  while read -r target; do
    for root in "${MOUNT_ROOTS[@]}"; do
      case "$target" in
        "$root"/*) ;;
        "$root") [ "$HAVE_RECORD" = 1 ] || continue ;;
        *) continue ;;
      esac
      [ -n "${KEPT_MOUNTS[$target]+x}" ] || printf '%s\n' "$target"
      break
    done
  done < <(mount_targets) | awk -F/ '{ print NF "\t" $0 }' | sort -rn -k1,1 | cut -f2- | uniq
}
unmount_one() { umount "$1" 2>/dev/null || umount -l "$1"; }
for pass in 1 2 3; do
  targets=$(to_unmount)
  [ -n "$targets" ] || break
  while read -r target; do
    act "unmount $target" unmount_one "$target"
  done <<<"$targets"
  [ "$DRY_RUN" = 0 ] || break
done

# 4. The pod network: cni0 and the pods' ends of their veths, ilha's routes.
delete_link() { ip link delete "$1" 2>/dev/null || ! ip link show "$1" >/dev/null 2>&1; }
if ip link show cni0 >/dev/null 2>&1 && [ -z "${KEPT_LINKS[cni0]+x}" ]; then
  while read -r veth; do
    [ -n "$veth" ] && act "delete interface $veth (on cni0)" delete_link "$veth"
  done < <(ip -o link show master cni0 2>/dev/null | awk -F': ' '{ split($2, name, "@"); print name[1] }')
  act "delete bridge cni0" delete_link cni0
fi
if ip link show kube-ipvs0 >/dev/null 2>&1 && [ -z "${KEPT_LINKS[kube-ipvs0]+x}" ]; then
  act "delete interface kube-ipvs0" delete_link kube-ipvs0
fi
recorded_route() {
  local route
  for route in ${RECORD_ROUTES[@]+"${RECORD_ROUTES[@]}"}; do
    case "$route" in "$1 "*) return 0 ;; esac
  done
  return 1
}
# What the routes script routes: `CIDR VIA` for each other node's pod range; the value of one of
# its `NAME=VALUE` lines (the service range and the node address its route goes from).
pod_routes() { sed -n 's/^ip route replace \([^ ]*\) via \([^ ]*\).*/\1 \2/p' "$1"; }
script_value() { sed -n "s/^$2=\\([^ ]*\\)\$/\\1/p" "$1" | head -n 1; }
# Whether the main table has a route for exactly CIDR whose WORD is VALUE (`via`, `src`).
has_route() {
  ip route show exact "$1" 2>/dev/null |
    awk -v word="$2" -v value="$3" '{ for (i = 1; i < NF; i++) if ($i == word && $(i + 1) == value) found = 1 } END { exit !found }'
}
if [ -f "$ROUTES_SCRIPT" ]; then
  while read -r cidr via; do
    recorded_route "$cidr" && continue
    if has_route "$cidr" via "$via"; then
      act "delete route $cidr via $via" ip route del "$cidr" via "$via"
    fi
  done < <(pod_routes "$ROUTES_SCRIPT")
  service_range=$(script_value "$ROUTES_SCRIPT" service_range)
  node_address=$(script_value "$ROUTES_SCRIPT" node_address)
  if [ -n "$service_range" ] && [ -n "$node_address" ] && ! recorded_route "$service_range" &&
    has_route "$service_range" src "$node_address"; then
    act "delete route $service_range src $node_address (the service range)" \
      ip route del "$service_range" src "$node_address"
  fi
fi

# 5. iptables: chains named KUBE-* and CNI-* (kube-proxy, the kubelet, CNI plugins), and the
# rules elsewhere that jump to them; nothing else, and no policy. One iptables-restore per
# table: flush the chains, delete the rules, delete the chains, atomically.
backends() {
  local family
  for family in iptables ip6tables; do
    if command -v "$family-nft-save" >/dev/null 2>&1 && command -v "$family-legacy-save" >/dev/null 2>&1; then
      printf '%s\n' "$family-nft" "$family-legacy"
    elif command -v "$family-save" >/dev/null 2>&1; then
      printf '%s\n' "$family"
    fi
  done
}
# Prints `C CHAIN` for each chain to delete and `D -D ...` for each rule to delete in TABLE.
plan_table() {
  awk -v want="$1" '
    function owned(chain) { return chain ~ /^(KUBE-|CNI-)/ }
    /^\*/ { table = substr($0, 2); next }
    table != want { next }
    /^:/ { chain = substr($1, 2); if (owned(chain)) print "C " chain; next }
    /^-A / {
      if (owned($2)) next
      # Quoted text (comments) cannot hide a jump.
      line = $0
      gsub(/"([^"\\]|\\.)*"/, "\"\"", line)
      n = split(line, word, " ")
      for (i = 3; i < n; i++)
        if ((word[i] == "-j" || word[i] == "-g") && owned(word[i + 1])) { print "D -D" substr($0, 3); break }
    }'
}
restore_table() { printf '%s\n' "$2" | "$1" --noflush --wait=5; }
while read -r backend; do
  dump=$("$backend-save" 2>/dev/null) || continue
  for table in $(sed -n 's/^\*//p' <<<"$dump"); do
    plan=$(plan_table "$table" <<<"$dump")
    [ -n "$plan" ] || continue
    chains=$(sed -n 's/^C //p' <<<"$plan")
    rules=$(sed -n 's/^D //p' <<<"$plan")
    if [ "$DRY_RUN" = 1 ]; then
      while read -r rule; do
        [ -n "$rule" ] && printf 'would delete %s %s rule: -A%s\n' "$backend" "$table" "${rule#-D}"
      done <<<"$rules"
      while read -r chain; do
        [ -n "$chain" ] && printf 'would delete %s %s chain %s\n' "$backend" "$table" "$chain"
      done <<<"$chains"
      continue
    fi
    input="*$table"
    while read -r chain; do [ -n "$chain" ] && input+=$'\n'":$chain - [0:0]"; done <<<"$chains"
    while read -r rule; do [ -n "$rule" ] && input+=$'\n'"$rule"; done <<<"$rules"
    while read -r chain; do [ -n "$chain" ] && input+=$'\n'"-X $chain"; done <<<"$chains"
    input+=$'\n'"COMMIT"
    act "delete $(grep -c . <<<"$chains") chain(s) and $(grep -c . <<<"$rules") rule(s) jumping to them from $backend $table" \
      restore_table "$backend-restore" "$input"
  done
done < <(backends)
if command -v nft >/dev/null 2>&1; then
  for family in ip ip6; do
    if nft list table "$family" kube-proxy >/dev/null 2>&1; then
      act "delete nft table $family kube-proxy" nft delete table "$family" kube-proxy
    fi
  done
fi

# 6. Unit files, then systemd forgets them.
units_removed=0
for unit in "${UNITS[@]}"; do
  for path in "$UNIT_DIR/$unit" "$UNIT_DIR/$unit.d" "$UNIT_DIR/$unit.wants" "$UNIT_DIR/$unit.requires" \
    $(find "$UNIT_DIR" -mindepth 2 -maxdepth 2 -type l -name "$unit" 2>/dev/null); do
    [ -e "$path" ] || [ -L "$path" ] || continue
    is_handled "$path" && continue
    act "remove $path" rm -rf -- "$path"
    handled[$path]=1
    units_removed=1
  done
done
if [ "$units_removed" = 1 ]; then
  act "reload systemd" systemctl daemon-reload
  [ "$DRY_RUN" = 1 ] || systemctl reset-failed "${UNITS[@]}" kubepods.slice >/dev/null 2>&1
fi

# 7. The files ilha put on the host.
in_owned_dir() {
  local dir
  for dir in "${OWNED_DIRS[@]}"; do
    case "$1" in "$dir"/*) return 0 ;; esac
  done
  return 1
}
under_file_root() {
  local root
  for root in "${FILE_ROOTS[@]}"; do
    case "$1" in "$root"*) return 0 ;; esac
  done
  return 1
}
while read -r file; do
  [ -n "$file" ] || continue
  case "$file" in
    /*/../* | */.. | /*/./* | */.) fail "not removing $file (listed in $INSTALLED_FILES): not a plain path"; continue ;;
    /*) ;;
    *) fail "not removing $file (listed in $INSTALLED_FILES): not an absolute path"; continue ;;
  esac
  if ! under_file_root "$file"; then
    fail "not removing $file (listed in $INSTALLED_FILES): outside the places ilha writes"
    continue
  fi
  in_owned_dir "$file" && continue
  is_handled "$file" && continue
  [ -e "$file" ] || [ -L "$file" ] || continue
  if [ -d "$file" ] && [ ! -L "$file" ]; then
    fail "not removing $file (listed in $INSTALLED_FILES): a directory"
    continue
  fi
  act "remove $file" rm -f -- "$file"
done <<<"$installed"

# 8. The directories ilha and its components own. Never while something is mounted below
# (rm -rf would go into the mounted filesystem).
has_mounts_below() {
  mount_targets | awk -v dir="$1/" 'index($0, dir) == 1 { found = 1 } END { exit !found }'
}
empty_dir() { find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; }
remove_owned_dir() {
  local dir=$1 entry
  [ -e "$dir" ] || [ -L "$dir" ] || return 0
  if [ -L "$dir" ]; then
    existed "$dir" || act "remove $dir" rm -f -- "$dir"
    return 0
  fi
  if [ "$DRY_RUN" = 0 ] && has_mounts_below "$dir"; then
    fail "not removing $dir: still mounted below it: $(mount_targets | awk -v dir="$dir/" 'index($0, dir) == 1' | head -3 | tr '\n' ' ')"
    return 0
  fi
  if existed "$dir"; then
    for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
      [ -e "$entry" ] || [ -L "$entry" ] || continue
      existed "$entry" || act "remove $entry" rm -rf -- "$entry"
    done
  elif mountpoint -q "$dir"; then
    act "empty $dir (a mount point: kept)" empty_dir "$dir"
  else
    act "remove $dir" rm -rf -- "$dir"
  fi
}
for dir in "${OWNED_DIRS[@]}"; do
  # ilha's own directory goes last, and only after a clean run (below).
  [ "$dir" = "$ILHA_DIR" ] || remove_owned_dir "$dir"
done
if [ "$HAVE_RECORD" = 1 ]; then
  for dir in "${PARENT_DIRS[@]}"; do
    [ -d "$dir" ] && [ ! -L "$dir" ] || continue
    existed "$dir" && continue
    if [ "$DRY_RUN" = 1 ]; then
      printf 'would remove %s (if empty)\n' "$dir"
    elif [ -z "$(ls -A "$dir" 2>/dev/null)" ]; then
      act "remove $dir" rmdir -- "$dir"
    fi
  done
fi

# 9. The etcd user and group, when ilha made them (etcd was stopped in 1). One action: userdel
# takes the group along where the system makes a group per user.
remove_etcd_user() {
  if getent passwd "$ETCD_USER" >/dev/null; then userdel "$ETCD_USER" || return 1; fi
  if getent group "$ETCD_USER" >/dev/null; then groupdel "$ETCD_USER" || return 1; fi
}
if [ -f "$ETCD_USER_MADE" ] && { getent passwd "$ETCD_USER" || getent group "$ETCD_USER"; } >/dev/null; then
  act "remove user and group $ETCD_USER (made by ilha)" remove_etcd_user
fi

# 10. Kernel settings back to their recorded values.
for setting in ${SYSCTLS[@]+"${SYSCTLS[@]}"}; do
  key=${setting%%=*}
  want=${setting#*=}
  now=$(sysctl -n "$key" 2>/dev/null | tr -s ' \t' ' ') || continue
  [ "$now" = "$want" ] || act "set $key back to $want" sysctl -qw "$key=$want"
done

# 11. ilha's journal and file list: kept after a failure, so that running reset again finds
# this host still installed and retries.
if [ "$failures" = 0 ]; then
  remove_owned_dir "$ILHA_DIR"
else
  printf 'kept %s (the journal and the list of installed files): run reset again to retry\n' "$ILHA_DIR" >&2
fi

[ "$DRY_RUN" = 0 ] || exit 0
if [ "$failures" -gt 0 ]; then
  printf 'teardown: %d action(s) done, %d failed\n' "$actions" "$failures" >&2
  exit 1
fi
printf 'teardown: %d action(s) done\n' "$actions"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::render;
    use crate::cluster::tests_support::assert_bash_syntax;
    use crate::cluster::tests_support::plan_for;

    fn record() -> HostRecord {
        HostRecord::parse(
            "h2",
            "== links ==\n3: keep0: <BROADCAST> mtu 1500\n== routes ==\ndefault via 10.88.0.1 dev eth0\n\
             == mounts ==\n/var/lib/containerd\n== sysctl ==\nnet.ipv4.ip_forward = 0\n\
             == paths ==\n/usr/local/bin\n/var/lib/containerd\n/var/lib/containerd/it's mine\n",
        )
        .unwrap()
    }

    #[test]
    fn every_variant_is_valid_bash() {
        let r = record();
        for mode in [Mode::Remove, Mode::DryRun] {
            assert_bash_syntax(&script(None, mode));
            assert_bash_syntax(&script(Some(&r), mode));
        }
    }

    #[test]
    fn the_record_becomes_what_the_script_keeps() {
        let text = script(Some(&record()), Mode::Remove);
        assert!(text.contains("DRY_RUN=0\nHAVE_RECORD=1\n"), "{text}");
        assert!(text.contains("declare -A KEPT_MOUNTS=(['/var/lib/containerd']=1)"));
        assert!(text.contains("declare -A KEPT_LINKS=(['keep0']=1)"));
        // Quotes in recorded paths survive.
        assert!(
            text.contains(r"['/var/lib/containerd/it'\''s mine']=1"),
            "{text}"
        );
        assert!(text.contains("SYSCTLS=('net.ipv4.ip_forward=0')"));
        assert!(text.contains("RECORD_ROUTES=('default via 10.88.0.1 dev eth0')"));
        let bare = script(None, Mode::DryRun);
        assert!(bare.contains("DRY_RUN=1\nHAVE_RECORD=0\n"));
        assert!(bare.contains("declare -A EXISTED=()\n"));
    }

    #[test]
    fn every_unit_ilha_renders_is_stopped_and_removed() {
        let plan = plan_for("v1.20.2");
        let master = &plan.hosts[0];
        let worker = &plan.hosts[4];
        let units = [
            render::etcd_unit(&plan, master),
            render::apiserver_unit(&plan, master),
            render::controller_manager_unit(&plan),
            render::scheduler_unit(&plan),
            render::containerd_unit(),
            render::kubelet_unit(&plan, worker),
            render::kube_proxy_unit(),
            render::routes_unit(),
            render::apiproxy_unit(&plan),
        ];
        let scheduled = crate::backup::schedule::render(&Default::default());
        let scheduled_units = scheduled.iter().filter(|f| f.path.starts_with(UNIT_DIR));
        for unit in units.iter().chain(scheduled_units) {
            let name = unit.path.strip_prefix("/etc/systemd/system/").unwrap();
            assert!(UNITS.contains(&name), "{name} is not in teardown::UNITS");
        }
        assert_eq!(UNITS.len(), 11);
        assert_eq!(UNITS[0], "ilha-etcd-snapshot.timer");
        assert_eq!(UNITS[2], "kubelet.service");
        // Scheduled snapshots are the operator's: reset never goes near them.
        let backups = crate::backup::schedule::BACKUP_DIR;
        assert!(
            !OWNED_DIRS
                .iter()
                .chain(PARENT_DIRS)
                .any(|d| backups.starts_with(d))
        );
        assert!(!FILE_ROOTS.iter().any(|root| backups.starts_with(root)));
        assert_eq!(UNITS.last(), Some(&"containerd.service"));
    }

    #[test]
    fn files_ilha_renders_are_listed_or_in_owned_directories() {
        let plan = plan_for("v1.20.2");
        let worker = &plan.hosts[4];
        for file in [
            render::containerd_config(&plan),
            render::kubelet_config(&plan, worker),
            render::kube_proxy_config(&plan, worker),
            render::cni_conflist(&plan, worker).unwrap(),
            render::sysctl_conf(),
            crate::cluster::hardening::kernel_defaults_conf(),
            crate::cluster::hardening::audit_policy(),
            render::routes_script(&plan, worker),
        ] {
            let path = file.path.as_str();
            let owned = OWNED_DIRS
                .iter()
                .any(|dir| path.starts_with(&format!("{dir}/")));
            assert!(
                owned || LEGACY_FILES.contains(&path),
                "{path}: neither in an owned directory nor a known file"
            );
            assert!(
                FILE_ROOTS.iter().any(|root| path.starts_with(root)),
                "{path}"
            );
        }
    }

    #[test]
    fn legacy_files_cover_every_required_binary() {
        let spec = ilha_format::cluster::ClusterSpec {
            kubernetes_version: format!("v1.{}.0", ilha_format::cluster::NEWEST_MINOR),
            network: ilha_format::cluster::Network::Bridge,
        };
        let requirements = ilha_format::cluster::requirements(&spec).unwrap();
        let old = ilha_format::cluster::ClusterSpec {
            kubernetes_version: format!("v1.{}.0", ilha_format::cluster::OLDEST_MINOR),
            ..spec
        };
        let old = ilha_format::cluster::requirements(&old).unwrap();
        for binary in requirements.all_binaries().chain(old.all_binaries()) {
            let name = binary.name;
            let known = LEGACY_FILES
                .iter()
                .any(|f| f.rsplit('/').next() == Some(name));
            // CNI plugins live in /opt/cni/bin, an owned directory.
            let cni = ["bridge", "host-local", "loopback", "portmap"].contains(&name);
            assert!(known || cni, "binary {name} missing from LEGACY_FILES");
        }
    }

    /// The etcd user section, run with stand-ins: the user and group go only when ilha's marker
    /// says ilha made them.
    #[test]
    fn the_etcd_user_goes_only_when_ilha_made_it() {
        let start = BODY.find("# 9. The etcd user").unwrap();
        let end = BODY.find("# 10. Kernel settings").unwrap();
        let section = &BODY[start..end];
        let run = |made: bool| {
            let dir = tempfile::tempdir().unwrap();
            let marker = dir.path().join("etcd-user-made");
            if made {
                std::fs::write(&marker, "").unwrap();
            }
            // A user whose group userdel takes along, and a group left alone.
            std::fs::write(dir.path().join("passwd-present"), "").unwrap();
            std::fs::write(dir.path().join("group-present"), "").unwrap();
            crate::cluster::tests_support::run_bash_ok(&format!(
                "ETCD_USER=etcd\nETCD_USER_MADE={}\n\
                 act() {{ echo \"$1\"; \"${{@:2}}\"; }}\n\
                 getent() {{ [ -e {dir}/$1-present ]; }}\n\
                 userdel() {{ echo \"userdel $*\"; rm -f {dir}/passwd-present {dir}/group-present; }}\n\
                 groupdel() {{ echo \"groupdel $*\"; rm -f {dir}/group-present; }}\n\
                 {section}",
                shell_quote(marker.to_str().unwrap()),
                dir = shell_quote(dir.path().to_str().unwrap()),
            ))
        };
        assert_eq!(
            run(true),
            "remove user and group etcd (made by ilha)\nuserdel etcd\n"
        );
        assert_eq!(run(false), "");
        let text = script(None, Mode::Remove);
        assert!(text.contains("ETCD_USER_MADE='/var/lib/ilha/etcd-user-made'\n"));
        // The audit log's directory is ilha's; its parent goes when empty and unrecorded.
        assert!(OWNED_DIRS.contains(&"/var/log/kubernetes/audit"));
        assert!(PARENT_DIRS.contains(&"/var/log/kubernetes"));
    }

    #[test]
    fn actions_are_the_done_and_would_lines() {
        let out = "done: stop kubelet.service\nnoise\nwould remove /etc/kubernetes\nteardown: 1 action(s) done\n";
        assert_eq!(
            actions(out),
            ["done: stop kubelet.service", "would remove /etc/kubernetes"]
        );
    }

    /// What reset reads back from the routes script `up` rendered: the other nodes' pod routes
    /// (not the service route), and the service range with the address its route goes from.
    #[test]
    fn reset_reads_every_route_the_routes_script_adds() {
        let plan = plan_for("v1.20.2");
        let worker = &plan.hosts[4];
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("ilha-routes");
        std::fs::write(&routes, render::routes_script(&plan, worker).content).unwrap();
        let function = |name: &str| {
            let line = BODY
                .lines()
                .find(|l| l.starts_with(&format!("{name}() {{")))
                .unwrap_or_else(|| panic!("{name} missing from the teardown"));
            format!("{line}\n")
        };
        let out = crate::cluster::tests_support::run_bash_ok(&format!(
            "{}{}routes={}\npod_routes \"$routes\"\n\
             echo \"range=$(script_value \"$routes\" service_range)\"\n\
             echo \"address=$(script_value \"$routes\" node_address)\"\n\
             echo \"none=$(script_value \"$routes\" no_such_value)\"\n",
            function("pod_routes"),
            function("script_value"),
            shell_quote(routes.to_str().unwrap()),
        ));
        assert_eq!(
            out,
            "10.244.0.0/24 10.0.0.1\n10.244.1.0/24 10.0.0.2\n10.244.2.0/24 10.0.0.3\n\
             10.244.3.0/24 10.0.0.4\n10.244.5.0/24 10.0.0.6\n\
             range=10.96.0.0/12\naddress=10.0.0.5\nnone=\n"
        );
        // The names are the render's own.
        let script = String::from_utf8(render::routes_script(&plan, worker).content).unwrap();
        assert!(script.contains(&format!("\n{}10.96.0.0/12\n", render::ROUTES_SERVICE_RANGE)));
        assert!(script.contains(&format!("\n{}10.0.0.5\n", render::ROUTES_NODE_ADDRESS)));
    }

    /// The iptables part, run against a dump in a sandbox: the chains and only the rules
    /// jumping to them, quoted comments do not fool it.
    #[test]
    fn iptables_plan_takes_kube_chains_and_only_their_jumps() {
        let start = BODY.find("plan_table() {").unwrap();
        let end = start + BODY[start..].find("\n}\n").unwrap() + 3;
        let function = &BODY[start..end];
        let dump = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:KUBE-FIREWALL - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:TEST-KEEP - [0:0]
:ILHA-GUARD - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -j TEST-KEEP
-A FORWARD -o eth0 -j ILHA-GUARD
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A TEST-KEEP -m comment --comment "not -j KUBE-X" -j ACCEPT
-A TEST-KEEP -g CNI-HOSTPORT-DNAT
-A KUBE-FIREWALL -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
"#;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("{function}\nplan_table filter"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(dump.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text,
            "C KUBE-FIREWALL\nC CNI-HOSTPORT-DNAT\nD -D INPUT -j KUBE-FIREWALL\n\
             D -D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             D -D TEST-KEEP -g CNI-HOSTPORT-DNAT\n"
        );
    }
}
