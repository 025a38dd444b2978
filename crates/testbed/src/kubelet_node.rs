//! A real node: kubelet (built by `./scripts/kube-build`) with Debian's containerd, runc and
//! CNI plugins, inside network and mount namespaces made here, never the host's. Pods get a
//! CNI bridge at the pod network's MTU (1450, as an overlay gives) on 10.88.0.0/16; the node's
//! address is the bridge's gateway, 10.88.0.1. Images come from `./scripts/node-images`,
//! imported into containerd's `k8s.io` namespace: no registry is reached.
//!
//! Beyond the node, on a 1500-byte link, a far web server (10.89.0.2) whose ICMP
//! "fragmentation needed" the node drops, as filtered cloud underlays do: the path-MTU black
//! hole in which the seed's builds hang.
//!
//! Crossing the namespace boundary (see [`crate::relay`]): the kubelet reaches the API server
//! at `127.0.0.1:PORT` inside, pods reach fake-bitbucket at `http://10.88.0.1`, and the API
//! server reaches the kubelet through its egress proxy.
//!
//! Everything the node starts lives in one cgroup tree of its own (`bbrunner-node-PID`, PID
//! the test's process): the daemons, the containers and, through the containers' PID
//! namespaces, whatever runs nested in dind. Stopping kills that tree and removes its cgroups;
//! the namespaces and their mounts go with their last process. A tree left by a test process
//! that was killed is swept when the next node starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::{Error, io};

/// The node's name, and its address inside its namespace (the pods' gateway).
pub const NODE_NAME: &str = "kubelet-1";
pub const NODE_IP: &str = "10.88.0.1";
/// Where pods reach fake-bitbucket: the node's port 80, relayed to the host's fake.
pub const BITBUCKET_URL_FOR_PODS: &str = "http://10.88.0.1";
const POD_SUBNET: &str = "10.88.0.0/16";
/// A web server beyond the node on a 1500-byte link, whose ICMP "fragmentation needed" the
/// node drops: `http://10.89.0.2/big` is a large download through a path-MTU black hole.
pub const FAR_HOST: &str = "10.89.0.2";
const FAR_GATEWAY: &str = "10.89.0.1";
pub const FAR_FILE_BYTES: u64 = 8 << 20;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_PREFIX: &str = "bbrunner-node-";

/// What a kubelet node needs from the host, with the package that brings it.
const HOST_TOOLS: [(&str, &str); 9] = [
    ("/usr/bin/containerd", "containerd"),
    ("/usr/bin/ctr", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/bin/socat", "socat"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/sbin/iptables", "iptables"),
    ("/bin/busybox", "busybox-static"),
];

/// Where `./scripts/node-images` puts the node's images, unless `BBRUNNER_NODE_IMAGES` says
/// otherwise.
pub fn images_dir() -> PathBuf {
    std::env::var_os("BBRUNNER_NODE_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace::workspace().join("target/node-images"))
}

/// The images `./scripts/node-images` built into `dir`, by role (`pause`, `busybox`,
/// `runner`, `dind`, `dockerService`), as references a pod spec names.
pub fn built_images(dir: &Path) -> Result<serde_json::Value, Error> {
    let path = dir.join("images.json");
    let text = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&text).map_err(|e| Error::Io {
        what: format!("reading {}", path.display()),
        source: std::io::Error::other(e),
    })
}

/// Why a kubelet node cannot run here, if it cannot: not root, or a tool or the images missing.
pub fn missing_prerequisite(kube_bin: &Path, images: &Path) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("a kubelet node needs root".into());
    }
    for (tool, package) in HOST_TOOLS {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    if !kube_bin.join("kubelet").is_file() {
        return Some(format!(
            "kubelet is not built in {} (./scripts/kube-build)",
            kube_bin.display()
        ));
    }
    if !images.join("images.json").is_file() {
        return Some(format!(
            "the node's images are not built in {} (./scripts/node-images)",
            images.display()
        ));
    }
    None
}

/// How to start a kubelet node.
pub struct NodeOptions {
    /// Its configuration, state and logs.
    pub dir: PathBuf,
    /// kube-build's binaries (kubelet).
    pub kube_bin: PathBuf,
    /// node-images' archives, all imported.
    pub images: PathBuf,
    /// The API server's port on loopback.
    pub api_port: u16,
    /// The cluster CA, which the kubelet trusts clients and the API server by.
    pub ca: PathBuf,
    /// The kubelet's kubeconfig (identity `system:node:kubelet-1`).
    pub kubeconfig: PathBuf,
    /// fake-bitbucket's port on loopback, relayed to the pods' `http://10.88.0.1`.
    pub bitbucket_port: Option<u16>,
    /// The pods' `eth0` MTU.
    pub mtu: u16,
}

/// A running kubelet node; dropped, it stops and leaves nothing behind.
pub struct KubeletNode {
    holder: Child,
    cgroup: String,
    relays: Vec<JoinHandle<()>>,
    /// The Unix socket reaching the kubelet's port, for the API server's egress proxy.
    pub kubelet_socket: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// The cgroup hierarchies mounted here (v1 controllers, named and unified).
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir(CGROUP_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// The processes anywhere in cgroup `name`'s tree.
fn processes_in(name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for hierarchy in hierarchies() {
        let mut stack = vec![hierarchy.join(name)];
        while let Some(dir) = stack.pop() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                found.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Kill every process of cgroup `name`'s tree, then remove its cgroups, deepest first.
fn tear_down(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_in(name);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in left {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for hierarchy in hierarchies() {
        let tree = hierarchy.join(name);
        if tree.exists() {
            let _ = Command::new("find")
                .arg(&tree)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Trees of test processes that no longer run: their node was never stopped.
fn sweep_abandoned() {
    let Ok(entries) = std::fs::read_dir(Path::new(CGROUP_ROOT).join("pids")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(CGROUP_PREFIX) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            tear_down(&name);
        }
    }
}

/// The cgroup tree's root in every hierarchy, with cpuset's CPUs and memory nodes filled in
/// (a new cpuset cgroup has none), and its `node` and `pods` children.
fn make_cgroups(name: &str) -> Result<(), Error> {
    for hierarchy in hierarchies() {
        for sub in ["", "/node", "/pods"] {
            let dir = hierarchy.join(format!("{name}{sub}"));
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if dir.join(file).exists() {
                    let parent = dir.parent().expect("a cgroup has a parent");
                    let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    write(&dir.join(file), value.trim())?;
                }
            }
        }
    }
    Ok(())
}

impl KubeletNode {
    /// Start the node. Its registration and readiness are the control plane's to wait for.
    pub fn start(options: &NodeOptions) -> Result<Self, Error> {
        sweep_abandoned();
        let dir = &options.dir;
        std::fs::create_dir_all(dir.join("cni"))
            .map_err(io(format!("creating {}", dir.display())))?;
        let path = |name: &str| dir.join(name).display().to_string();
        let cgroup = format!("{CGROUP_PREFIX}{}", std::process::id());
        tear_down(&cgroup);
        make_cgroups(&cgroup)?;

        write(
            &dir.join("containerd.toml"),
            &format!(
                r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "bbrunner.dev/pause:dev"
  # Lowering a process's OOM score needs CAP_SYS_RESOURCE, which some hosts (this sandbox)
  # withhold: scores are kept at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
"#,
                root = path("containerd/root"),
                state = path("containerd/state"),
                socket = path("containerd.sock"),
                cni = path("cni"),
            ),
        )?;
        write(
            &dir.join("cni/10-pods.conflist"),
            &serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "pods",
                "plugins": [
                    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                     "hairpinMode": true, "mtu": options.mtu,
                     "ipam": {"type": "host-local", "dataDir": path("cni-ipam"),
                              "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
            .to_string(),
        )?;
        write(&dir.join("resolv.conf"), &format!("nameserver {NODE_IP}\n"))?;
        write(
            &dir.join("kubelet.yaml"),
            &format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
address: {NODE_IP}
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}/pods
# This host's cgroups are v1 (hybrid), which kubelet refuses unless told otherwise.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{containerd}
resolvConf: {resolv}
podLogsDir: {logs}
enforceNodeAllocatable: []
protectKernelDefaults: false
makeIPTablesUtilChains: false
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
                ca = options.ca.display(),
                containerd = path("containerd.sock"),
                resolv = path("resolv.conf"),
                logs = path("pod-logs"),
            ),
        )?;
        let images: Vec<String> = std::fs::read_dir(&options.images)
            .map_err(io(format!("reading {}", options.images.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .map(|p| p.display().to_string())
            .collect();
        let bitbucket_relay = options
            .bitbucket_port
            .map(|_| {
                format!(
                    "socat TCP-LISTEN:80,fork,reuseaddr UNIX-CONNECT:{} &\n",
                    path("bitbucket.sock")
                )
            })
            .unwrap_or_default();
        // Run by `unshare --net --mount`: first into the node's cgroups, so that everything it
        // starts is in them; mounts stay private to the namespace. setpriv ties each daemon to
        // this shell, and the shell to the test.
        write(
            &dir.join("node.sh"),
            &format!(
                r#"set -eu
for hierarchy in {CGROUP_ROOT}/*/; do
  [ -e "${{hierarchy}}{cgroup}/node/cgroup.procs" ] && echo $$ > "${{hierarchy}}{cgroup}/node/cgroup.procs"
done
mount --make-rprivate /
mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
ip link set lo up
ip link add cni0 type bridge
ip link set cni0 mtu {mtu}
ip addr add {NODE_IP}/16 dev cni0
ip link set cni0 up
# A far host beyond a 1500-byte link, as the internet is beyond a cloud overlay, whose
# "fragmentation needed" the node drops, as filtered underlays do: a path-MTU black hole.
echo 1 > /proc/sys/net/ipv4/ip_forward
ip netns add far
ip link add far0 type veth peer name far1
ip link set far1 netns far
ip addr add {FAR_GATEWAY}/24 dev far0
ip link set far0 up
ip -n far addr add {FAR_HOST}/24 dev far1
ip -n far link set far1 up
ip -n far link set lo up
ip -n far route add {POD_SUBNET} via {FAR_GATEWAY}
iptables -A OUTPUT -d {FAR_HOST} -p icmp --icmp-type fragmentation-needed -j DROP
mkdir -p {far_files}
head -c {FAR_FILE_BYTES} /dev/zero > {far_files}/big
ip netns exec far busybox httpd -f -p {FAR_HOST}:80 -h {far_files} &
socat TCP-LISTEN:{api_port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{api_socket} &
socat UNIX-LISTEN:{kubelet_socket},fork TCP:{NODE_IP}:10250 &
{bitbucket_relay}setpriv --pdeathsig KILL containerd --config {config} > {containerd_log} 2>&1 &
while [ ! -S {containerd_socket} ]; do sleep 0.1; done
for image in {images}; do
  ctr --address {containerd_socket} --namespace k8s.io images import "$image" > /dev/null
done
exec setpriv --pdeathsig KILL {kubelet} --config {kubelet_config} --kubeconfig {kubeconfig} \
  --root-dir {root_dir} --hostname-override {NODE_NAME} --node-ip {NODE_IP} > {kubelet_log} 2>&1
"#,
                mtu = options.mtu,
                api_port = options.api_port,
                api_socket = path("api.sock"),
                far_files = path("far"),
                kubelet_socket = path("kubelet.sock"),
                config = path("containerd.toml"),
                containerd_log = path("containerd.log"),
                containerd_socket = path("containerd.sock"),
                images = images.join(" "),
                kubelet = options.kube_bin.join("kubelet").display(),
                kubelet_config = path("kubelet.yaml"),
                kubeconfig = options.kubeconfig.display(),
                root_dir = path("kubelet"),
                kubelet_log = path("kubelet.log"),
            ),
        )?;
        let mut relays = vec![
            crate::relay::unix_to_tcp(
                &dir.join("api.sock"),
                format!("127.0.0.1:{}", options.api_port),
            )
            .map_err(io("the API server's relay"))?,
        ];
        if let Some(port) = options.bitbucket_port {
            relays.push(
                crate::relay::unix_to_tcp(&dir.join("bitbucket.sock"), format!("127.0.0.1:{port}"))
                    .map_err(io("fake-bitbucket's relay"))?,
            );
        }
        let log = std::fs::File::create(dir.join("node.log")).map_err(io("the node's log"))?;
        let holder = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "unshare",
                "--net",
                "--mount",
                "--fork",
                "--kill-child",
            ])
            .args(["/bin/sh", &path("node.sh")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("the node's log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("starting the node's namespaces"))?;
        Ok(Self {
            holder,
            cgroup,
            relays,
            kubelet_socket: dir.join("kubelet.sock"),
        })
    }

    /// An error if the node's processes have stopped, with the end of its logs.
    pub fn check_alive(&mut self, dir: &Path) -> Result<(), Error> {
        if matches!(self.holder.try_wait(), Ok(Some(_))) {
            let tail = |name: &str| {
                let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(10)..].join("\n")
            };
            return Err(Error::Exited {
                process: "kubelet node",
                log: dir.join("kubelet.log"),
                tail: format!(
                    "{}\n{}\n{}",
                    tail("node.log"),
                    tail("containerd.log"),
                    tail("kubelet.log")
                ),
            });
        }
        Ok(())
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        tear_down(&self.cgroup);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        for relay in &self.relays {
            relay.abort();
        }
    }
}
