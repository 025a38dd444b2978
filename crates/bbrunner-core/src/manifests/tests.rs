use super::*;
use crate::import::parse_docker_command;

const COMMAND: &str = "docker container run -it \
  -e ACCOUNT_UUID={0b4a1c2e-8f3d-4e5a-9b6c-7d8e9f0a1b2c} \
  -e REPOSITORY_UUID={11111111-2222-4333-8444-555555555555} \
  -e RUNNER_UUID={5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f} \
  -e RUNTIME_PREREQUISITES_ENABLED=true \
  -e OAUTH_CLIENT_ID=client \
  -e OAUTH_CLIENT_SECRET=ATOA-s3cret \
  -e WORKING_DIRECTORY=/tmp \
  -e HTTPS_PROXY=http://user:pw@proxy:3128 \
  docker-public.packages.atlassian.com/sox/atlassian/bitbucket-pipelines-runner:1";

fn options() -> RenderOptions {
    RenderOptions {
        namespace: DEFAULT_NAMESPACE.into(),
        name: None,
        create_namespace: true,
        size: RunnerSize::X1,
        disk_gib: None,
        dind: DindSpec::default(),
        runner_image: None,
        placement: PodPlacement::default(),
    }
}

fn rendered(options: &RenderOptions) -> RenderedRunner {
    render_runner(&parse_docker_command(COMMAND).unwrap(), options).unwrap()
}

fn pod(r: &RenderedRunner) -> &PodSpec {
    r.deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn dind(pod: &PodSpec) -> &Container {
    &pod.init_containers.as_ref().unwrap()[0]
}

fn all_args(c: &Container) -> String {
    let mut v = c.command.clone().unwrap_or_default();
    v.extend(c.args.clone().unwrap_or_default());
    v.join(" ")
}

#[test]
fn every_size_gives_dind_equal_memory_requests_and_limits() {
    for (size, memory) in [
        (RunnerSize::X1, "5Gi"),
        (RunnerSize::X2, "9Gi"),
        (RunnerSize::X4, "17Gi"),
        (RunnerSize::X8, "33Gi"),
    ] {
        let r = rendered(&RenderOptions { size, ..options() });
        let res = dind(pod(&r)).resources.as_ref().unwrap();
        assert_eq!(res.requests.as_ref().unwrap()["memory"].0, memory);
        assert_eq!(res.limits.as_ref().unwrap()["memory"].0, memory);
        // Not BestEffort: every container requests memory.
        let runner = &pod(&r).containers[0];
        assert_eq!(
            runner
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["memory"]
                .0,
            "512Mi"
        );
    }
}

#[test]
fn dind_is_a_privileged_native_sidecar_that_must_answer_before_the_runner_starts() {
    let r = rendered(&options());
    let d = dind(pod(&r));
    assert_eq!(d.restart_policy.as_deref(), Some("Always"));
    assert_eq!(d.security_context.as_ref().unwrap().privileged, Some(true));
    assert_eq!(d.image.as_deref(), Some(DEFAULT_DIND_IMAGE));
    assert!(!is_floating_dind_tag(DEFAULT_DIND_IMAGE));
    let probe = d.startup_probe.as_ref().unwrap();
    assert_eq!(
        probe.exec.as_ref().unwrap().command.as_ref().unwrap(),
        &["docker", "version"]
    );
    // Never a TCP listener.
    assert!(all_args(d).contains("--host=unix:///var/run/docker.sock"));
    assert!(!all_args(d).contains("tcp://"));
}

#[test]
fn only_dind_is_privileged_the_runner_keeps_three_file_capabilities_and_no_escalation() {
    let r = rendered(&options());
    let p = pod(&r);
    let runner = &p.containers[0];
    let sc = runner.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, None);
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(
        caps.add.as_deref().unwrap(),
        ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    // A privileged container gets no seccomp filter anyway; setting one there would mislead.
    assert_eq!(
        dind(p).security_context.as_ref().unwrap().seccomp_profile,
        None
    );
}

#[test]
fn auto_mtu_reads_eth0_and_applies_to_default_and_user_networks_where_dockerd_can() {
    let r = rendered(&options());
    let d = dind(pod(&r));
    let args = all_args(d);
    assert!(args.contains("cat /sys/class/net/eth0/mtu"));
    assert!(args.contains("--mtu=\"$mtu\""));
    assert!(args.contains("--default-network-opt=\"bridge=com.docker.network.driver.mtu=$mtu\""));
    // The flag is chosen by asking the daemon, not by the image's tag.
    assert!(args.contains("dockerd --help 2>&1 | grep -q -- --default-network-opt"));
    assert_eq!(d.args.as_ref().unwrap(), &["auto"]);
}

#[test]
fn fixed_mtu_and_mirrors_are_passed_as_arguments() {
    let r = rendered(&RenderOptions {
        dind: DindSpec {
            mtu: Mtu::Fixed(1400),
            registry_mirrors: vec!["https://mirror.example".into()],
            extra_args: vec!["--debug".into()],
            ..DindSpec::default()
        },
        ..options()
    });
    let d = dind(pod(&r));
    assert_eq!(d.command.as_ref().unwrap()[2], DIND_START_SCRIPT);
    assert_eq!(
        d.args.as_ref().unwrap(),
        &[
            "1400",
            "--registry-mirror=https://mirror.example",
            "--debug"
        ]
    );
}

#[test]
fn runner_and_dind_share_the_three_volumes_at_the_same_paths() {
    let r = rendered(&options());
    let p = pod(&r);
    let mounts = |c: &Container| -> Vec<(String, String, bool)> {
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.mount_path.clone(),
                    m.read_only == Some(true),
                )
            })
            .collect()
    };
    let runner = mounts(&p.containers[0]);
    let docker = mounts(dind(p));
    for (name, path, read_only) in [
        ("work", "/tmp", false),
        ("docker-run", "/var/run", false),
        ("docker-containers", "/var/lib/docker/containers", true),
    ] {
        assert!(
            runner.contains(&(name.into(), path.into(), read_only)),
            "{name}"
        );
        assert!(
            docker.contains(&(name.into(), path.into(), false)),
            "{name}"
        );
    }
    assert_eq!(p.automount_service_account_token, Some(false));
}

#[test]
fn runner_env_comes_from_the_secret_and_extra_env_is_kept() {
    let r = rendered(&options());
    let env = pod(&r).containers[0].env.clone().unwrap();
    let from_secret = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()))
    };
    let secret = "runner-5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f-registration".to_owned();
    assert_eq!(
        from_secret("OAUTH_CLIENT_SECRET"),
        Some((secret.clone(), "oauth_client_secret".into()))
    );
    assert_eq!(
        from_secret("REPOSITORY_UUID"),
        Some((secret.clone(), "repository_uuid".into()))
    );
    assert_eq!(
        from_secret("HTTPS_PROXY"),
        Some((secret, "env.HTTPS_PROXY".into()))
    );
    let data = r.secret.string_data.as_ref().unwrap();
    assert_eq!(
        data["runner_uuid"],
        "{5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f}"
    );
    assert_eq!(data["oauth_client_secret"], "ATOA-s3cret");
    assert_eq!(data["env.HTTPS_PROXY"], "http://user:pw@proxy:3128");
    // No secret value in the pod spec itself.
    let spec = serde_json::to_string(&r.deployment).unwrap();
    assert!(!spec.contains("ATOA-s3cret") && !spec.contains("user:pw"));
}

#[test]
fn deployment_never_runs_two_pods_for_one_runner() {
    let r = rendered(&options());
    let spec = r.deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
    let labels = r.deployment.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels[LABEL_RUNNER_UUID],
        "5c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f"
    );
    assert_eq!(labels[LABEL_MANAGED_BY], "bbrunner");
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(
        annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "false"
    );
}

#[test]
fn namespace_only_when_asked_and_labelled_privileged() {
    let r = rendered(&options());
    let ns = r.namespace.unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let r = rendered(&RenderOptions {
        create_namespace: false,
        ..options()
    });
    assert!(r.namespace.is_none());
    assert!(r.warnings.iter().any(|w| w.contains("privileged")));
}

#[test]
fn bad_options_are_named() {
    let cmd = parse_docker_command(COMMAND).unwrap();
    let err = |o: RenderOptions| render_runner(&cmd, &o).unwrap_err().to_string();
    assert!(
        err(RenderOptions {
            namespace: "Bad_NS".into(),
            ..options()
        })
        .starts_with("namespace \"Bad_NS\" is not a valid Kubernetes name")
    );
    assert!(
        err(RenderOptions {
            name: Some("x".repeat(64)),
            ..options()
        })
        .contains("longer than 63")
    );
    assert!(
        err(RenderOptions {
            name: Some("-x".into()),
            ..options()
        })
        .contains("start and end with a letter or digit")
    );
    assert!(
        err(RenderOptions {
            runner_image: Some(" ".into()),
            ..options()
        })
        .starts_with("runner image is empty")
    );
    let mirror = RenderOptions {
        dind: DindSpec {
            registry_mirrors: vec!["mirror:5000".into()],
            ..DindSpec::default()
        },
        ..options()
    };
    assert!(err(mirror).contains("registry mirror \"mirror:5000\""));
}

#[test]
fn floating_dind_tags_are_warned_about() {
    for image in [
        "docker:dind",
        "docker",
        "docker:latest",
        "registry.local:5000/docker:dind",
    ] {
        assert!(is_floating_dind_tag(image), "{image}");
    }
    for image in [
        "docker:28.5-dind",
        "docker:27.5.1-dind",
        "docker@sha256:abcd",
        "registry.local:5000/docker:28-dind",
    ] {
        assert!(!is_floating_dind_tag(image), "{image}");
    }
    let r = rendered(&RenderOptions {
        dind: DindSpec {
            image: "docker:dind".into(),
            ..DindSpec::default()
        },
        ..options()
    });
    assert!(r.warnings.iter().any(|w| w.contains("floats")));
    // The seed's pin: a dind whose step networks cannot follow the MTU is named by render.
    let r = rendered(&RenderOptions {
        dind: DindSpec {
            image: "docker:20.10.7-dind".into(),
            ..DindSpec::default()
        },
        ..options()
    });
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("--default-network-opt")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn size_and_mtu_parse_with_clear_errors() {
    assert_eq!(RunnerSize::parse("4x").unwrap(), RunnerSize::X4);
    assert_eq!(RunnerSize::X8.to_string(), "8x");
    assert!(
        RunnerSize::parse("16x")
            .unwrap_err()
            .to_string()
            .contains("8x is the self-hosted maximum")
    );
    assert_eq!(Mtu::parse("auto").unwrap(), Mtu::Auto);
    assert_eq!(Mtu::parse("1450").unwrap(), Mtu::Fixed(1450));
    for bad in ["0", "100", "70000", "big"] {
        assert!(
            Mtu::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("use `auto`"),
            "{bad}"
        );
    }
}

#[test]
fn dind_images_before_docker_24_are_warned_about_unless_the_mtu_is_1500() {
    let warning = dind_networks_mtu_warning("docker:20.10.7-dind", Mtu::Auto).unwrap();
    assert!(
        warning.contains("Docker 20") && warning.contains("keeps 1500"),
        "{warning}"
    );
    assert!(dind_networks_mtu_warning("registry/docker:23.0-dind", Mtu::Fixed(1400)).is_some());
    assert!(dind_networks_mtu_warning("docker:20.10-dind", Mtu::Fixed(1500)).is_none());
    assert!(dind_networks_mtu_warning(DEFAULT_DIND_IMAGE, Mtu::Auto).is_none());
    assert!(dind_networks_mtu_warning("docker:dind", Mtu::Auto).is_none());
    assert_eq!(docker_major("docker:29.1-dind"), Some(29));
    assert_eq!(docker_major("docker:dind"), None);
}

/// A runner pod's configuration with every default.
fn plain_config() -> RunnerPodConfig {
    RunnerPodConfig {
        secret_name: "runner-registration".into(),
        repository_scoped: false,
        runner_image: DEFAULT_RUNNER_IMAGE.into(),
        runner_resources: None,
        working_directory: "/tmp".into(),
        runner_env: Vec::new(),
        secret_env: Vec::new(),
        size: RunnerSize::X1,
        disk_gib: None,
        dind: DindSpec::default(),
        placement: PodPlacement::default(),
        cache_claim: None,
    }
}

#[test]
fn dind_extra_args_may_not_open_the_docker_api_on_tcp_without_tls() {
    let config = |args: &[&str]| {
        let mut c = plain_config();
        c.dind.extra_args = args.iter().map(|a| a.to_string()).collect();
        c.validate()
    };
    for open in [
        &["--host=tcp://0.0.0.0:2375"][..],
        &["-H", "tcp://0.0.0.0:2375"],
        &["-Htcp://0.0.0.0:2375"],
        &["--host", "TCP://[::]:2375"],
        &["--debug", "-H=tcp://127.0.0.1:2375"],
        &["-H", ":2375"],
        &["--host=0.0.0.0:2375"],
        &[
            "--host=tcp://0.0.0.0:2376",
            "--tlsverify",
            "--tlsverify=false",
        ],
        &["--host=tcp://0.0.0.0:2376", "--tls"],
    ] {
        assert!(
            matches!(config(open), Err(ManifestError::OpenDockerTcp { .. })),
            "{open:?} accepted"
        );
    }
    assert!(config(&["--host=tcp://0.0.0.0:2376", "--tlsverify"]).is_ok());
    assert!(config(&["--host=unix:///var/run/docker.sock", "--debug"]).is_ok());
    let message = config(&["--debug", "-H", ":2375"]).unwrap_err().to_string();
    assert!(
        message.contains("dind.extraArgs[1] (-H :2375)") && message.contains("--tlsverify"),
        "{message}"
    );
}

#[test]
fn docker_host_in_the_runner_env_may_not_point_at_tcp() {
    let with_env = |value: Option<&str>| {
        let mut c = plain_config();
        c.runner_env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "DOCKER_HOST".into(),
            value: value.map(str::to_owned),
            ..Default::default()
        });
        c.validate()
    };
    assert!(matches!(
        with_env(Some("tcp://localhost:2375")),
        Err(ManifestError::DockerHostTcp)
    ));
    assert!(matches!(
        with_env(Some("localhost:2375")),
        Err(ManifestError::DockerHostTcp)
    ));
    // Read from elsewhere: its value cannot be judged, so it is refused.
    assert!(matches!(with_env(None), Err(ManifestError::DockerHostTcp)));
    assert!(with_env(Some("unix:///var/run/docker.sock")).is_ok());
    let message = with_env(Some("tcp://x:2375")).unwrap_err().to_string();
    assert!(message.contains("runner.env DOCKER_HOST"), "{message}");
}

fn quantities(
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
    key: &str,
) -> (String, String) {
    let resources = resources.unwrap();
    (
        resources.requests.as_ref().unwrap()[key].0.clone(),
        resources.limits.as_ref().unwrap()[key].0.clone(),
    )
}

/// Every emptyDir's size limit (the downward API's small volume of annotations has none).
fn size_limits(spec: &PodSpec) -> Vec<(String, String)> {
    spec.volumes
        .as_ref()
        .unwrap()
        .iter()
        .filter(|v| v.downward_api.is_none())
        .map(|v| {
            let limit = v.empty_dir.as_ref().unwrap().size_limit.as_ref().unwrap();
            (v.name.clone(), limit.0.clone())
        })
        .collect()
}

#[test]
fn every_volume_and_container_has_a_disk_bound_that_grows_with_the_step_size() {
    let r = rendered(&options());
    let spec = pod(&r);
    assert_eq!(
        size_limits(spec),
        [
            ("work".into(), "5Gi".into()),
            ("docker-run".into(), "64Mi".into()),
            ("docker-data".into(), "20Gi".into()),
            ("docker-containers".into(), "5Gi".into()),
        ]
    );
    let storage = "ephemeral-storage";
    assert_eq!(
        quantities(dind(spec).resources.as_ref(), storage),
        ("5Gi".into(), "25Gi".into())
    );
    assert_eq!(
        quantities(spec.containers[0].resources.as_ref(), storage),
        ("1Gi".into(), "6Gi".into())
    );

    let r = rendered(&RenderOptions {
        size: RunnerSize::X4,
        ..options()
    });
    assert!(size_limits(pod(&r)).contains(&("docker-data".into(), "80Gi".into())));
    let r = rendered(&RenderOptions {
        disk_gib: Some(50),
        ..options()
    });
    assert!(size_limits(pod(&r)).contains(&("docker-data".into(), "50Gi".into())));
    assert_eq!(
        quantities(dind(pod(&r)).resources.as_ref(), storage),
        ("13Gi".into(), "63Gi".into())
    );
}

#[test]
fn an_ephemeral_storage_of_the_user_s_own_is_kept() {
    let dind_spec = DindSpec {
        resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(
                [("ephemeral-storage".to_owned(), Quantity("100Gi".into()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }),
        ..DindSpec::default()
    };
    let r = rendered(&RenderOptions {
        dind: dind_spec,
        ..options()
    });
    assert_eq!(
        quantities(dind(pod(&r)).resources.as_ref(), "ephemeral-storage"),
        ("5Gi".into(), "100Gi".into())
    );
}

#[test]
fn the_working_directory_stays_apart_from_system_and_docker_directories() {
    for fine in ["/tmp", "/builds", "/home/runner/work", "/var/tmp", "/tmp/"] {
        assert!(validate_working_directory(fine).is_ok(), "{fine}");
    }
    for bad in [
        "/",
        "//",
        "/etc",
        "/etc/",
        "/usr",
        "/var",
        "/var/run",
        "/var/run/x",
        "/var/lib",
        "/var/lib/docker",
        "/var/lib/docker/containers/x",
        "tmp",
        "/tmp/../etc",
        "/./tmp",
    ] {
        assert!(validate_working_directory(bad).is_err(), "{bad}");
    }
}

#[test]
fn selectors_and_tolerations_follow_the_api_server_s_label_rules() {
    let selector = |k: &str, v: &str| PodPlacement {
        node_selector: Some([(k.to_owned(), v.to_owned())].into()),
        ..PodPlacement::default()
    };
    assert!(validate_placement(&selector("kubernetes.io/arch", "amd64")).is_ok());
    assert!(validate_placement(&selector("pool", "")).is_ok());
    for (k, v) in [
        ("bad key", "x"),
        ("Example.com/x", "y"),
        ("a/", "x"),
        ("x", "-y"),
        ("x", &"v".repeat(64)),
    ] {
        assert!(validate_placement(&selector(k, v)).is_err(), "{k}={v}");
    }
    let toleration = |key: Option<&str>,
                      operator: &str,
                      value: Option<&str>,
                      effect: Option<&str>| PodPlacement {
        tolerations: Some(vec![Toleration {
            key: key.map(str::to_owned),
            operator: Some(operator.to_owned()),
            value: value.map(str::to_owned),
            effect: effect.map(str::to_owned),
            toleration_seconds: None,
        }]),
        ..PodPlacement::default()
    };
    assert!(
        validate_placement(&toleration(
            Some("dedicated"),
            "Equal",
            Some("ci"),
            Some("NoSchedule")
        ))
        .is_ok()
    );
    assert!(validate_placement(&toleration(None, "Exists", None, None)).is_ok());
    for bad in [
        toleration(None, "Equal", Some("x"), None),
        toleration(Some("k"), "Exists", Some("x"), None),
        toleration(Some("k"), "In", None, None),
        toleration(Some("k k"), "Exists", None, None),
        toleration(Some("k"), "Equal", Some("a b"), None),
        toleration(Some("k"), "Equal", Some("a"), Some("Sometimes")),
    ] {
        assert!(validate_placement(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_deleted_runner_pod_waits_for_its_step_while_marked_busy() {
    let r = rendered(&options());
    let spec = pod(&r);
    assert_eq!(spec.termination_grace_period_seconds, Some(DRAIN_SECONDS));
    let runner = &spec.containers[0];
    let hook = runner
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap();
    let command = hook.exec.as_ref().unwrap().command.as_ref().unwrap();
    assert_eq!(command.last().unwrap(), DRAIN_HOOK);
    assert!(DRAIN_HOOK.contains(&format!("'^{ANNOTATION_BUSY}=\"true\"$'")));
    // The annotations the hook reads, as the kubelet writes them.
    let mounted = runner
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "pod-info")
        .unwrap();
    assert!(DRAIN_HOOK.contains(&format!("{}/annotations", mounted.mount_path)));
    assert_eq!(mounted.read_only, Some(true));
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "pod-info")
        .unwrap();
    let file = &volume
        .downward_api
        .as_ref()
        .unwrap()
        .items
        .as_ref()
        .unwrap()[0];
    assert_eq!(file.path, "annotations");
    assert_eq!(
        file.field_ref.as_ref().unwrap().field_path,
        "metadata.annotations"
    );
}

#[test]
fn a_cached_pod_keeps_docker_data_on_its_claim_and_tells_dind_to_lock_it() {
    let mut config = plain_config();
    config.cache_claim = Some("ci-cache-2".into());
    let spec = runner_pod_spec(&config);
    let volumes = spec.volumes.unwrap();
    let data = volumes.iter().find(|v| v.name == "docker-data").unwrap();
    assert_eq!(
        data.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("ci-cache-2")
    );
    assert!(data.empty_dir.is_none());
    // The step logs the runner reads stay with the pod.
    let containers = volumes
        .iter()
        .find(|v| v.name == "docker-containers")
        .unwrap();
    assert!(containers.empty_dir.is_some());
    let dind = &spec.init_containers.unwrap()[0];
    let env = dind.env.as_ref().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "BBRUNNER_CACHE" && e.value.as_deref() == Some("1"))
    );

    let uncached = runner_pod_spec(&plain_config());
    assert!(
        uncached
            .volumes
            .unwrap()
            .iter()
            .all(|v| v.persistent_volume_claim.is_none())
    );
    assert!(
        uncached.init_containers.unwrap()[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .all(|e| e.name != "BBRUNNER_CACHE")
    );
}
