//! A real Kubernetes control plane for the tests, built the way users' clusters are: etcd,
//! kube-apiserver (TLS from a CA made here, client-certificate admin, ServiceAccount token
//! signing, `Node,RBAC` authorization, the default admission plugins plus NodeRestriction),
//! kube-controller-manager and kube-scheduler, each under its own identity, all on loopback on
//! free ports; and nodes run by the node agent, each with its own `system:node:` identity.
//!
//! The binaries come from `./scripts/kube-build`. Every process is started through
//! `setpriv --pdeathsig KILL`, so that none outlives the thread that started it even when the
//! test process is killed; `Drop` stops them gracefully first.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use node_agent::{AgentConfig, NodeAgent, NodeConfig};

use crate::kubelet_node::{self, KubeletNode, NodeOptions};
use crate::pki::{Authority, Subject, service_account_keys};

pub use crate::error::Error;
use crate::error::io;

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where its certificates, data, kubeconfigs and logs go.
    pub dir: PathBuf,
    /// Where `./scripts/kube-build` put the binaries.
    pub bin_dir: PathBuf,
    /// Agent nodes, named `node-1` to `node-N`.
    pub nodes: u32,
    /// Where runner pods' agents register.
    pub bitbucket_url: Option<String>,
    pub pod_start_latency: Duration,
    pub pod_mtu: u16,
    /// More flags for kube-apiserver.
    pub apiserver_args: Vec<String>,
    /// A real kubelet node (see [`crate::kubelet_node`]) beside the agent nodes, running the
    /// images `./scripts/node-images` built into this folder.
    pub kubelet_node: Option<PathBuf>,
}

impl Options {
    pub fn new(dir: &Path, bin_dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            bin_dir: bin_dir.to_owned(),
            nodes: 1,
            bitbucket_url: None,
            pod_start_latency: Duration::from_millis(500),
            pod_mtu: 1450,
            apiserver_args: Vec::new(),
            kubelet_node: None,
        }
    }
}

/// A process of the control plane.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Result<Self, Error> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log file"))?;
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        Ok(Self { name, child, log })
    }

    /// An error if the process has exited, with the end of its log.
    fn check_alive(&mut self) -> Result<(), Error> {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            return Err(Error::Exited {
                process: self.name,
                log: self.log.clone(),
                tail,
            });
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after a grace.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on loopback (the OS's pick; released for the process that will bind it).
fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// A kubeconfig for `server` with a client certificate or a bearer token.
fn kubeconfig(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bbrunner-test\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n{user}contexts:\n- name: bbrunner-test\n  context:\n    cluster: bbrunner-test\n    user: user\n    namespace: default\ncurrent-context: bbrunner-test\n",
        ca.display()
    )
}

fn cert_user(cert: &Path, key: &Path) -> String {
    format!(
        "    client-certificate: {}\n    client-key: {}\n",
        cert.display(),
        key.display()
    )
}

/// A kubeconfig that presents `token`.
pub fn token_kubeconfig(server: &str, ca: &Path, token: &str) -> String {
    kubeconfig(server, ca, &format!("    token: {token}\n"))
}

/// A token for ServiceAccount `namespace/name` from the TokenRequest API, valid for `seconds`.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    seconds: i64,
) -> Result<String, Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// A running control plane with its nodes.
pub struct ControlPlane {
    server: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    ca: PathBuf,
    client: Client,
    agent: Option<NodeAgent>,
    kubelet: Option<KubeletNode>,
    egress: Option<tokio::task::JoinHandle<()>>,
    /// In start order; stopped in reverse.
    processes: Vec<Process>,
}

const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Where `./scripts/kube-build` puts the binaries of `workspace`, unless `BBRUNNER_KUBE_BIN`
/// says otherwise; an error naming the missing one and how to build it.
pub fn binaries(workspace: &Path) -> Result<PathBuf, Error> {
    let dir = std::env::var_os("BBRUNNER_KUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/kube/bin"));
    for name in BINARIES {
        if !dir.join(name).is_file() {
            return Err(Error::NotBuilt(name, dir));
        }
    }
    Ok(dir)
}

impl ControlPlane {
    pub async fn start(options: Options) -> Result<Self, Error> {
        for name in BINARIES {
            if !options.bin_dir.join(name).is_file() {
                return Err(Error::NotBuilt(name, options.bin_dir.clone()));
            }
        }
        let dir = &options.dir;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(io(format!("creating {}", pki.display())))?;
        let bin = |name: &str| options.bin_dir.join(name);
        let file = |name: &str| pki.join(name);
        let arg = |name: &str, path: PathBuf| format!("--{name}={}", path.display());

        // Certificates, as kubeadm lays them out.
        let ca = Authority::new()?;
        write(&file("ca.crt"), &ca.pem.cert)?;
        write(&file("ca.key"), &ca.pem.key)?;
        let mut certs = vec![(
            "apiserver",
            ca.server(
                "kube-apiserver",
                &[
                    "127.0.0.1",
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                    "10.96.0.1",
                ],
            )?,
        )];
        let clients = [
            ("admin", "kubernetes-admin", Some("system:masters")),
            ("controller-manager", "system:kube-controller-manager", None),
            ("scheduler", "system:kube-scheduler", None),
            (
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
            ),
        ];
        for (name, user, group) in clients {
            certs.push((name, ca.client(&Subject { user, group })?));
        }
        for (name, pem) in &certs {
            write(&file(&format!("{name}.crt")), &pem.cert)?;
            write(&file(&format!("{name}.key")), &pem.key)?;
        }
        let (sa_private, sa_public) = service_account_keys()?;
        write(&file("sa.key"), &sa_private)?;
        write(&file("sa.pub"), &sa_public)?;

        let mut processes = Vec::new();
        // etcd, its data in the folder.
        let (etcd_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Process::spawn(
            "etcd",
            &bin("etcd"),
            &[
                arg("data-dir", dir.join("etcd")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--listen-metrics-urls=".into(),
                "--log-level=warn".into(),
            ],
            dir,
        )?;
        wait_for("etcd", &mut etcd, Duration::from_secs(30), || async {
            reqwest::get(format!("{etcd_url}/health"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .is_some()
        })
        .await?;
        processes.push(etcd);

        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            arg("tls-cert-file", file("apiserver.crt")),
            arg("tls-private-key-file", file("apiserver.key")),
            arg("client-ca-file", file("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            arg("service-account-key-file", file("sa.pub")),
            arg("service-account-signing-key-file", file("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=Node,RBAC".into(),
            // The default plugins (ValidatingAdmissionPolicy, PodSecurity, ServiceAccount,
            // ...) stay on; kubeadm adds NodeRestriction.
            "--enable-admission-plugins=NodeRestriction".into(),
            // dind is a privileged container.
            "--allow-privileged=true".into(),
            arg(
                "kubelet-client-certificate",
                file("apiserver-kubelet-client.crt"),
            ),
            arg("kubelet-client-key", file("apiserver-kubelet-client.key")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            // The `kubernetes` Service cannot point at a loopback address.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ];
        // A kubelet node's address is inside its own network namespace: the API server reaches
        // it (logs, exec, port-forward) through an egress proxy of ours, as a cluster behind
        // Konnectivity does.
        let egress = match &options.kubelet_node {
            Some(_) => {
                let socket = dir.join("egress.sock");
                let config = dir.join("egress.yaml");
                write(
                    &config,
                    &format!(
                        "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        udsName: {}\n",
                        socket.display()
                    ),
                )?;
                apiserver_args.push(arg("egress-selector-config-file", config));
                Some(
                    crate::relay::connect_proxy(
                        &socket,
                        kubelet_node::NODE_IP.into(),
                        dir.join("kubelet-node/kubelet.sock"),
                    )
                    .map_err(io("the API server's egress proxy"))?,
                )
            }
            None => None,
        };
        apiserver_args.extend(options.apiserver_args.iter().cloned());
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            &bin("kube-apiserver"),
            &apiserver_args,
            dir,
        )?;
        let admin = dir.join("admin.kubeconfig");
        write(
            &admin,
            &kubeconfig(
                &server,
                &file("ca.crt"),
                &cert_user(&file("admin.crt"), &file("admin.key")),
            ),
        )?;
        let client = client_from(&admin).await?;
        wait_for(
            "kube-apiserver",
            &mut apiserver,
            Duration::from_secs(90),
            || async {
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("a request");
                client.request_text(request).await.is_ok_and(|t| t == "ok")
            },
        )
        .await?;
        processes.push(apiserver);

        for (name, user_cert) in [
            ("kube-controller-manager", "controller-manager"),
            ("kube-scheduler", "scheduler"),
        ] {
            let config = dir.join(format!("{user_cert}.kubeconfig"));
            write(
                &config,
                &kubeconfig(
                    &server,
                    &file("ca.crt"),
                    &cert_user(
                        &file(&format!("{user_cert}.crt")),
                        &file(&format!("{user_cert}.key")),
                    ),
                ),
            )?;
            let mut args = vec![
                arg("kubeconfig", config.clone()),
                arg("authentication-kubeconfig", config.clone()),
                arg("authorization-kubeconfig", config),
                "--bind-address=127.0.0.1".into(),
                // No metrics or health port: readiness is read from the API server.
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
            ];
            if name == "kube-controller-manager" {
                args.extend([
                    "--use-service-account-credentials=true".into(),
                    arg("service-account-private-key-file", file("sa.key")),
                    arg("root-ca-file", file("ca.crt")),
                    arg("cluster-signing-cert-file", file("ca.crt")),
                    arg("cluster-signing-key-file", file("ca.key")),
                ]);
            }
            processes.push(Process::spawn(name, &bin(name), &args, dir)?);
        }
        // Pods need their namespace's `default` ServiceAccount, which the controller manager
        // makes: the cluster is ready for them once it exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let started = Instant::now();
        loop {
            for p in &mut processes {
                p.check_alive()?;
            }
            if accounts.get_opt("default").await?.is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(Error::Timeout("kube-controller-manager", started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Nodes, each with its kubelet identity.
        let mut nodes = Vec::new();
        for i in 1..=options.nodes {
            let name = format!("node-{i}");
            let config = node_kubeconfig(&ca, &pki, dir, &server, &name)?;
            let mut node = NodeConfig::new(&name);
            node.kubelet_version = kubernetes_version(&options.bin_dir);
            nodes.push((node, client_from(&config).await?));
        }
        let agent = NodeAgent::start(
            AgentConfig {
                bitbucket_url: options.bitbucket_url.clone(),
                pod_start_latency: options.pod_start_latency,
                pod_mtu: options.pod_mtu,
                serve_kubelet_api: true,
            },
            nodes,
        )
        .await?;
        let kubelet = match &options.kubelet_node {
            Some(images) => {
                let name = kubelet_node::NODE_NAME;
                let config = node_kubeconfig(&ca, &pki, dir, &server, name)?;
                let node_dir = dir.join("kubelet-node");
                let mut node = KubeletNode::start(&NodeOptions {
                    dir: node_dir.clone(),
                    kube_bin: options.bin_dir.clone(),
                    images: images.clone(),
                    api_port,
                    ca: file("ca.crt"),
                    kubeconfig: config,
                    bitbucket_port: options
                        .bitbucket_url
                        .as_deref()
                        .and_then(|u| u.parse::<reqwest::Url>().ok())
                        .and_then(|u| u.port_or_known_default()),
                    mtu: options.pod_mtu,
                })?;
                wait_until_ready(&client, name, &mut node, &node_dir).await?;
                Some(node)
            }
            None => None,
        };

        Ok(Self {
            server,
            dir: dir.clone(),
            kubeconfig: admin,
            kubectl: bin("kubectl"),
            ca: file("ca.crt"),
            client,
            agent: Some(agent),
            kubelet,
            egress,
            processes,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (client certificate, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// kubectl of the control plane's version.
    pub fn kubectl(&self) -> &Path {
        &self.kubectl
    }

    /// A client with the admin's identity.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn agent(&self) -> &NodeAgent {
        self.agent.as_ref().expect("running")
    }

    /// The CA certificate file clients trust the API server by.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// A kubeconfig that acts as ServiceAccount `namespace/name`, with a token from the
    /// TokenRequest API (what a pod's projected token is), valid for `seconds`.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> Result<PathBuf, Error> {
        let token = request_token(&self.client, namespace, name, seconds).await?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        write(&path, &token_kubeconfig(&self.server, &self.ca, &token))?;
        Ok(path)
    }

    /// Stop the nodes, then the control plane's processes, newest first.
    pub fn stop(&mut self) {
        drop(self.kubelet.take());
        if let Some(egress) = self.egress.take() {
            egress.abort();
        }
        drop(self.agent.take());
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Kubernetes version kube-build stamped into its binaries (`kubectl version --client`).
fn kubernetes_version(bin_dir: &Path) -> String {
    Command::new(bin_dir.join("kubectl"))
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "v0.0.0".into())
}

/// Node `name`'s kubelet identity (`system:node:NAME` in `system:nodes`), its certificate in
/// `pki`, and a kubeconfig for it in `dir`.
fn node_kubeconfig(
    ca: &Authority,
    pki: &Path,
    dir: &Path,
    server: &str,
    name: &str,
) -> Result<PathBuf, Error> {
    let pem = ca.client(&Subject {
        user: &format!("system:node:{name}"),
        group: Some("system:nodes"),
    })?;
    let (cert, key) = (
        pki.join(format!("{name}.crt")),
        pki.join(format!("{name}.key")),
    );
    write(&cert, &pem.cert)?;
    write(&key, &pem.key)?;
    let config = dir.join(format!("{name}.kubeconfig"));
    write(
        &config,
        &kubeconfig(server, &pki.join("ca.crt"), &cert_user(&cert, &key)),
    )?;
    Ok(config)
}

/// Wait for the kubelet node to register and report Ready, failing early if it stops.
async fn wait_until_ready(
    client: &Client,
    name: &str,
    node: &mut KubeletNode,
    dir: &Path,
) -> Result<(), Error> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let limit = Duration::from_secs(120);
    let started = Instant::now();
    loop {
        node.check_alive(dir)?;
        let ready = nodes.get_opt(name).await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(Error::Timeout("the kubelet node", limit));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Poll `ready` until it holds, failing early if `process` exits.
async fn wait_for<F, Fut>(
    name: &'static str,
    process: &mut Process,
    limit: Duration,
    ready: F,
) -> Result<(), Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        process.check_alive()?;
        if ready().await {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(Error::Timeout(name, limit));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
