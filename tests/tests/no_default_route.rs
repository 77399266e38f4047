//! A cluster on hosts without a default route (common in air gaps): every default route of the 3
//! lab hosts is deleted before `up`. Checked on the hosts themselves, over SSH: the route ilha
//! adds for the service range (cluster interface, cluster address as source); host -> a ClusterIP
//! Service from every host; master -> the `kubernetes` Service (443 -> kube-apiserver), workers
//! too; pod -> Service; NodePort from another host; without the route a host-network client gets
//! "Network is unreachable" and the routes unit puts it back; a default route on another
//! interface changes nothing for Services and NodePorts; `reset` removes the route and each host
//! matches its record. The same cluster also shows the images step's pinned label: exactly the
//! pause image carries `io.cri-containerd.pinned=pinned` on every node, and the running kubelet
//! (1.20) names it in `--pod-infra-container-image`, the one image its GC spares before 1.29.
//!
//! Stand-ins, said plainly: the lab's containerd is Debian's 1.6.20, which predates the label
//! (its binary does not contain it: the test prints what it finds), and its kubelet is 1.20, which
//! predates CRI's `pinned` field; newer ones cannot be built here, and the bundle has no
//! `crictl`. So the label is proven on every node, not that kubelet's image GC or
//! `crictl rmi --prune` spares the image: that needs containerd >= 1.7.10 (or the 1.6 backport)
//! and kubelet >= 1.29.
//!
//! The default routes are put back by a guard, from the machine's side of each host's network
//! namespace, even when an assertion fails (and `FreshLab` wipes the hosts afterwards anyway).
use std::time::Instant;

use ilha_e2e::cluster::{
    FreshLab, fresh_lab, httpd_workload, ilha, kubectl, lab_bundle, master_and_two_workers, text,
    up_args, write_config, write_inventory,
};
use xtask::lab::Lab;

const SERVICE_RANGE: &str = ilha::config::DEFAULT_SERVICE_CIDR;
/// The `kubernetes` Service: the service range's first address.
const API_SERVICE_IP: &str = "10.96.0.1";
const NODE_PORT: u16 = 30080;

/// The hosts' default routes, deleted; put back from the machine's side when dropped.
struct NoDefaultRoutes<'a> {
    lab: &'a Lab,
    /// `(host index, "-4" or "-6", route as `ip route show` printed it)`.
    deleted: Vec<(usize, &'static str, String)>,
    restored: bool,
}

impl<'a> NoDefaultRoutes<'a> {
    /// Deletes every IPv4 and IPv6 default route of `hosts`, from inside each host.
    fn delete(lab: &'a Lab, hosts: &[usize]) -> NoDefaultRoutes<'a> {
        let mut guard = NoDefaultRoutes {
            lab,
            deleted: Vec::new(),
            restored: false,
        };
        for &index in hosts {
            for family in ["-4", "-6"] {
                let routes = lab
                    .ssh_ok(index, &format!("ip {family} route show default"))
                    .unwrap_or_else(|err| panic!("h{index}: listing default routes: {err}"));
                for route in routes.lines().map(str::trim).filter(|r| !r.is_empty()) {
                    // Recorded first: a deletion that half-worked is still put back.
                    guard.deleted.push((index, family, route.to_string()));
                    lab.ssh_ok(index, &format!("ip {family} route del {route}"))
                        .unwrap_or_else(|err| panic!("h{index}: deleting `{route}`: {err}"));
                }
            }
        }
        guard
    }

    /// Puts every deleted route back (`ip -n NETNS route replace`: works whatever the host's
    /// SSH or its own state); the failures, if any.
    fn put_back(&mut self) -> Vec<String> {
        self.restored = true;
        let mut failures = Vec::new();
        for (index, family, route) in &self.deleted {
            let netns = xtask::lab::net::netns_name(self.lab.config(), *index);
            let mut command = std::process::Command::new("ip");
            command.args(["-n", &netns, family, "route", "replace"]);
            command.args(route.split_whitespace());
            match command.output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => failures.push(format!(
                    "h{index}: ip -n {netns} {family} route replace {route}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(err) => failures.push(format!("h{index}: running ip: {err}")),
            }
        }
        failures
    }
}

impl Drop for NoDefaultRoutes<'_> {
    fn drop(&mut self) {
        if !self.restored {
            for failure in self.put_back() {
                eprintln!("putting the lab's default routes back: {failure}");
            }
        }
    }
}

/// An HTTP GET from the host's own network (bash's /dev/tcp: a host-network client), its
/// output and bash's complaint.
fn http_get(lab: &FreshLab, index: usize, ip: &str, port: u16) -> (bool, String) {
    let out = lab
        .ssh(
            index,
            &format!(
                "timeout 10 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && \
                 printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3 && cat <&3'"
            ),
        )
        .unwrap_or_else(|err| panic!("h{index}: ssh: {err}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn assert_served(lab: &FreshLab, index: usize, ip: &str, port: u16, what: &str) {
    let (ok, out) = http_get(lab, index, ip, port);
    assert!(
        ok && out.contains("served-by-busy-"),
        "h{index} -> {what} ({ip}:{port}):\n{out}"
    );
}

/// Whether `line` (as `ip -o route` prints it) has `word` followed by `value`.
fn says(line: &str, word: &str, value: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).any(|pair| pair == [word, value])
}

/// The host's route for exactly the service range, as `ip -o route show` prints it.
fn service_route(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(index, &format!("ip -o route show exact {SERVICE_RANGE}"))
        .unwrap_or_else(|err| panic!("h{index}: {err}"))
        .trim()
        .to_string()
}

#[test]
fn a_cluster_without_default_routes_serves_host_network_clients_and_reset_removes_the_route() {
    let bundle = lab_bundle();
    let lab = fresh_lab(3);
    let work = tempfile::tempdir().unwrap();
    let layout = master_and_two_workers();
    let inventory = write_inventory(&lab, work.path(), &layout, None);
    let config = write_config(work.path(), "no-default-route");
    let inventory = inventory.to_str().unwrap();
    let config = config.to_str().unwrap();
    let ip = |index: usize| lab.host(index).ip;

    let mut routes = NoDefaultRoutes::delete(&lab, &[1, 2, 3]);
    assert!(
        !routes.deleted.is_empty(),
        "the lab's hosts had no default route to delete"
    );
    // The failure this is about: no route at all for a ClusterIP.
    let before = lab
        .ssh(2, &format!("ip route get {API_SERVICE_IP}"))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("Network is unreachable"),
        "h2 still routes {API_SERVICE_IP} without a default route: {before:?}"
    );

    let started = Instant::now();
    let up = ilha(
        &lab,
        &up_args(
            bundle.bundle.to_str().unwrap(),
            bundle.pubkey.to_str().unwrap(),
            inventory,
            config,
        ),
    );
    assert!(up.status.success(), "ilha up failed:\n{}", text(&up));
    eprintln!(
        "BENCH ilha up, 3 hosts without a default route: {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The service range on the cluster interface, from the cluster address; still no default.
    for index in 1..=3 {
        let route = service_route(&lab, index);
        assert!(
            says(&route, "dev", "eth0") && says(&route, "src", &ip(index)),
            "h{index}: {route:?}"
        );
        let defaults = lab
            .ssh_ok(index, "ip -4 route show default; ip -6 route show default")
            .unwrap();
        assert!(defaults.trim().is_empty(), "h{index}: {defaults}");
    }

    // Pinned: exactly the pause image, on every node.
    let pause = ilha_format::cluster::requirements(&ilha_format::cluster::ClusterSpec {
        kubernetes_version: "v1.20.2".into(),
        network: ilha_format::cluster::Network::Bridge,
    })
    .unwrap()
    .image(ilha_format::cluster::ImagePurpose::Pause)
    .to_string();
    let (key, value) = ilha::cluster::steps::PINNED_LABEL.split_once('=').unwrap();
    for index in 1..=3 {
        let ctr = "/usr/local/bin/ctr --namespace k8s.io images list --quiet";
        let pinned = lab
            .ssh_ok(index, &format!("{ctr} 'labels.\"{key}\"=={value}'"))
            .unwrap();
        assert_eq!(
            pinned.lines().collect::<Vec<_>>(),
            [pause.as_str()],
            "h{index}"
        );
        let all = lab.ssh_ok(index, ctr).unwrap();
        assert!(
            all.lines().any(|l| l == "ilha.test/busybox:1"),
            "h{index}: {all}"
        );
        // What kubelet 1.20's image GC does spare: the image this flag names, in the running
        // kubelet (not only in its unit file).
        let cmdline = lab
            .ssh_ok(
                index,
                "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value kubelet)/cmdline",
            )
            .unwrap();
        assert!(
            cmdline.contains(&format!("--pod-infra-container-image={pause}")),
            "h{index}: {cmdline}"
        );
    }
    let knows = lab
        .ssh_ok(
            2,
            &format!(
                "/usr/local/bin/containerd --version; grep -c {key} /usr/local/bin/containerd || true"
            ),
        )
        .unwrap();
    eprintln!(
        "NOTE containerd on the lab, and how often its binary names {key} (0: the label is \
         carried, not honoured; CRI reports pinned=false):\n{knows}"
    );

    // Two httpd pods, one per worker, behind a NodePort Service (which has a ClusterIP too).
    lab.ssh_ok(
        1,
        &format!(
            "cat > /root/busy.yaml <<'EOF'\n{}\nEOF",
            httpd_workload("busy", 2, None, Some(NODE_PORT))
        ),
    )
    .unwrap();
    kubectl(&lab, 1, "apply -f /root/busy.yaml");
    kubectl(&lab, 1, "rollout status deployment/busy --timeout=180s");
    let cluster_ip = kubectl(&lab, 1, "get service busy -o jsonpath={.spec.clusterIP}");
    let cluster_ip = cluster_ip.trim();

    // Host -> ClusterIP, from every host (the master runs no pod of it: through the workers).
    for index in 1..=3 {
        assert_served(&lab, index, cluster_ip, 80, "the busy Service");
    }
    // Master -> the `kubernetes` Service, through TLS to kube-apiserver.
    let ready = kubectl(
        &lab,
        1,
        &format!("--server=https://{API_SERVICE_IP}:443 get --raw /readyz"),
    );
    assert_eq!(ready.trim(), "ok");
    // Workers reach it too (a host-network agent's way to the API).
    for index in [2, 3] {
        lab.ssh_ok(
            index,
            &format!("timeout 10 bash -c 'exec 3<>/dev/tcp/{API_SERVICE_IP}/443'"),
        )
        .unwrap_or_else(|err| panic!("h{index} -> {API_SERVICE_IP}:443: {err}"));
    }
    // Pod -> Service.
    let pod = kubectl(
        &lab,
        1,
        "get pods -l app=busy -o jsonpath={.items[0].metadata.name}",
    );
    let from_pod = kubectl(
        &lab,
        1,
        &format!(
            "exec {} -- /bin/busybox sh -c \"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {cluster_ip} 80\"",
            pod.trim()
        ),
    );
    assert!(from_pod.contains("served-by-busy-"), "{from_pod}");
    // NodePort from another host.
    for (from, to) in [(1, 2), (3, 2), (2, 3)] {
        assert_served(&lab, from, &ip(to), NODE_PORT, &format!("h{to}'s NodePort"));
    }

    // Without the route a host-network client cannot even connect; the routes unit (what runs
    // at boot) puts it back.
    lab.ssh_ok(2, &format!("ip route del {SERVICE_RANGE}"))
        .unwrap();
    let (ok, out) = http_get(&lab, 2, cluster_ip, 80);
    assert!(
        !ok && out.contains("Network is unreachable"),
        "h2 without the service route:\n{out}"
    );
    lab.ssh_ok(2, "systemctl restart ilha-routes.service")
        .unwrap();
    assert!(
        says(&service_route(&lab, 2), "src", &ip(2)),
        "the routes unit did not put the service route back on h2"
    );
    assert_served(&lab, 2, cluster_ip, 80, "the busy Service, route put back");

    // A default route on another interface (a veth pair standing in for a second NIC, leading
    // nowhere): Services still go through the cluster interface from the cluster address, other
    // destinations follow the default route, NodePorts answer.
    lab.ssh_ok(
        3,
        "ip link add alt0 type veth peer name alt1 && ip link set alt1 up && ip link set alt0 up && \
         ip addr add 192.0.2.3/24 dev alt0 && ip route add default via 192.0.2.1 dev alt0",
    )
    .unwrap();
    let service_way = lab
        .ssh_ok(3, &format!("ip -o route get {cluster_ip}"))
        .unwrap();
    assert!(
        says(&service_way, "dev", "eth0") && says(&service_way, "src", &ip(3)),
        "{service_way}"
    );
    let elsewhere = lab.ssh_ok(3, "ip -o route get 198.51.100.7").unwrap();
    assert!(
        says(&elsewhere, "dev", "alt0") && says(&elsewhere, "src", "192.0.2.3"),
        "{elsewhere}"
    );
    assert_served(
        &lab,
        3,
        cluster_ip,
        80,
        "the busy Service, default route on alt0",
    );
    assert_served(
        &lab,
        1,
        &ip(3),
        NODE_PORT,
        "h3's NodePort, default route on alt0",
    );
    assert_served(
        &lab,
        3,
        &ip(2),
        NODE_PORT,
        "h2's NodePort, default route on alt0",
    );
    lab.ssh_ok(3, "ip link del alt0").unwrap();

    // reset says it removes the route, removes it and leaves each host as recorded (without a
    // default route).
    let dry = ilha(&lab, &["reset", "-i", inventory, "-c", config, "--dry-run"]);
    assert!(dry.status.success(), "reset --dry-run:\n{}", text(&dry));
    for index in 1..=3 {
        let listed = format!(
            "would delete route {SERVICE_RANGE} src {} (the service range)",
            ip(index)
        );
        assert!(
            text(&dry).contains(&listed),
            "{listed:?} missing:\n{}",
            text(&dry)
        );
    }
    let started = Instant::now();
    let reset = ilha(&lab, &["reset", "-i", inventory, "-c", config, "--yes"]);
    let report = text(&reset);
    assert!(reset.status.success(), "reset failed:\n{report}");
    eprintln!(
        "BENCH ilha reset, 3 hosts: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for index in 1..=3 {
        assert!(
            report.lines().any(|l| l.starts_with(&format!("h{index}: "))
                && l.ends_with("matches its pre-install record")),
            "h{index} does not match its record:\n{report}"
        );
        assert_eq!(service_route(&lab, index), "", "h{index}");
    }

    // The lab as it was.
    let failures = routes.put_back();
    assert!(failures.is_empty(), "{failures:#?}");
    for (index, family, route) in &routes.deleted {
        let now = lab
            .ssh_ok(*index, &format!("ip {family} route show default"))
            .unwrap();
        assert!(
            now.lines().any(|l| l.trim() == route),
            "h{index}: `{route}` not back: {now}"
        );
    }
}
