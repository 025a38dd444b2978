use super::*;

fn pool(name: &str, labels: &[&str], mtu: Mtu) -> PoolFacts {
    PoolFacts {
        namespace: "ci".into(),
        name: name.into(),
        scope: "acme".into(),
        labels: Labels::new(labels).unwrap(),
        dind_image: "docker:28.5-dind".into(),
        mtu,
        best_effort: false,
        generation: Some(1),
        observed_generation: Some(1),
        cache: None,
    }
}

fn healthy() -> Observations {
    Observations {
        server_version: Some("v1.33.2".into()),
        crd_versions: Some(vec!["v1alpha1".into()]),
        crd_current: true,
        lease: Some(("op-1".into(), 3.0)),
        pools: vec![pool("builds", &["build"], Mtu::Auto)],
        namespace_psa: vec![("ci".into(), Some("privileged".into()))],
        node_runtimes: vec![("node-1".into(), "containerd://1.7.27".into())],
        pod_mtu: Some(1450),
        scope_runners: vec![("acme".into(), Some(3))],
        credentials: vec![("ci/builds".into(), CredentialsCheck::Valid)],
        unschedulable: vec![],
        runner_pods: vec![("5c1d".into(), "ci/builds-5c1d".into())],
        invalid_pools: vec![],
        api_calls: api_calls_by_identity(&[("ci/builds".into(), "9f3a".into(), 120)]),
        storage_classes: Some(vec![("standard".into(), true), ("ssd".into(), false)]),
    }
}

fn verdict(checks: &[Check], prefix: &str) -> Verdict {
    checks
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix}: {checks:?}"))
        .verdict
}

#[test]
fn a_healthy_setup_passes_everything() {
    let checks = evaluate(&healthy());
    assert!(
        checks.iter().all(|c| c.verdict == Verdict::Pass),
        "{checks:#?}"
    );
}

#[test]
fn each_broken_setup_is_reported_with_a_fix() {
    let mut o = healthy();
    o.server_version = Some("v1.28.9-eks-036c24b".into());
    o.crd_versions = None;
    o.lease = Some(("op-1".into(), 120.0));
    o.namespace_psa = vec![("ci".into(), Some("baseline".into()))];
    o.node_runtimes = vec![("old".into(), "containerd://1.4.3".into())];
    o.pools = vec![
        PoolFacts {
            best_effort: true,
            dind_image: "docker:dind".into(),
            ..pool("builds", &["build"], Mtu::Fixed(1500))
        },
        pool("more", &["build", "big"], Mtu::Auto),
    ];
    o.scope_runners = vec![("acme".into(), Some(100)), ("other".into(), None)];
    o.credentials = vec![
        (
            "ci/builds".into(),
            CredentialsCheck::Rejected("Bitbucket rejected the OAuth consumer key".into()),
        ),
        (
            "ci/elsewhere".into(),
            CredentialsCheck::Unreachable("connection refused".into()),
        ),
    ];
    o.unschedulable = vec![(
        "ci/builds-x".into(),
        "0/3 nodes are available: 3 Insufficient memory.".into(),
    )];
    o.runner_pods = vec![
        ("5c1d".into(), "ci/builds-5c1d".into()),
        ("5c1d".into(), "bitbucket-runners/runner-5c1d-7f9c".into()),
        ("77aa".into(), "ci/builds-77aa".into()),
    ];
    o.invalid_pools = vec![(
        "ci/odd".into(),
        "spec.runner.size: unknown variant `16x`".into(),
    )];
    o.api_calls = api_calls_by_identity(&[
        ("ci/builds".into(), "9f3a".into(), 700),
        ("ci/more".into(), "9f3a".into(), 690),
    ]);
    let checks = evaluate(&o);
    for (prefix, expected) in [
        ("kubernetes", Verdict::Fail),
        ("crd", Verdict::Fail),
        ("operator", Verdict::Fail),
        ("pod-security/ci", Verdict::Fail),
        ("dind/ci/builds", Verdict::Fail),
        ("mtu/ci/builds", Verdict::Fail),
        ("labels/ci/builds+more", Verdict::Warn),
        ("quota/acme", Verdict::Fail),
        ("quota/other", Verdict::Warn),
        ("credentials/ci/builds", Verdict::Fail),
        ("credentials/ci/elsewhere", Verdict::Fail),
        ("scheduling/ci/builds-x", Verdict::Fail),
        ("spec/ci/odd", Verdict::Fail),
        ("runner/5c1d", Verdict::Fail),
        ("api-budget/9f3a", Verdict::Warn),
    ] {
        assert_eq!(verdict(&checks, prefix), expected, "{prefix}: {checks:#?}");
    }
    assert!(
        checks
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
            .all(|c| !c.fix.is_empty())
    );
    // A network failure is not blamed on the credentials.
    let unreachable = checks
        .iter()
        .find(|c| c.name == "credentials/ci/elsewhere")
        .unwrap();
    assert!(unreachable.fix.contains("network") && !unreachable.fix.contains("Secret"));
    let dind = checks.iter().find(|c| c.name == "dind/ci/builds").unwrap();
    assert!(
        dind.detail.contains("floats") && dind.detail.contains("OOM score"),
        "{}",
        dind.detail
    );
}

#[test]
fn kubernetes_versions_from_1_29_pass_and_vendor_suffixes_parse() {
    for (version, expected) in [
        ("v1.29.0", Verdict::Pass),
        ("v1.33.0-fake", Verdict::Pass),
        ("v1.29.4-gke.100", Verdict::Pass),
        ("v2.0.0", Verdict::Pass),
        ("v1.28.15", Verdict::Fail),
        ("v1.9.0", Verdict::Fail),
        ("weird", Verdict::Warn),
    ] {
        assert_eq!(
            kubernetes_check(Some(version)).verdict,
            expected,
            "{version}"
        );
    }
    assert_eq!(kubernetes_check(None).verdict, Verdict::Warn);
}

#[test]
fn a_dind_before_docker_24_is_warned_about_for_its_step_networks() {
    let mut o = healthy();
    o.pools[0].dind_image = "docker:20.10.7-dind".into();
    let checks = evaluate(&o);
    let dind = checks.iter().find(|c| c.name == "dind/ci/builds").unwrap();
    assert_eq!(dind.verdict, Verdict::Warn);
    assert!(
        dind.detail.contains("--default-network-opt"),
        "{}",
        dind.detail
    );
}

#[test]
fn api_calls_are_grouped_by_identity() {
    let grouped = api_calls_by_identity(&[
        ("ci/a".into(), "id1".into(), 300),
        ("ci/b".into(), "id2".into(), 40),
        ("ci/c".into(), "id1".into(), 310),
    ]);
    assert_eq!(
        grouped,
        [
            ApiCalls {
                identity: "id1".into(),
                calls_last_hour: 310,
                pools: vec!["ci/a".into(), "ci/c".into()],
            },
            ApiCalls {
                identity: "id2".into(),
                calls_last_hour: 40,
                pools: vec!["ci/b".into()],
            },
        ]
    );
}

#[test]
fn runtime_versions_parse() {
    assert_eq!(
        runtime_version("containerd://1.4.3"),
        Some(("containerd", 1, 4, 3))
    );
    assert_eq!(
        runtime_version("docker://20.10.7"),
        Some(("docker", 20, 10, 7))
    );
    assert_eq!(runtime_version("cri-o://1.30.2"), Some(("cri-o", 1, 30, 2)));
    assert_eq!(
        crate::manifests::docker_major("registry/docker:28.5-dind"),
        Some(28)
    );
}

#[test]
fn a_cached_pools_class_warmth_skips_and_sharing_are_reported() {
    let cached = |cache: PoolCache| Observations {
        pools: vec![PoolFacts {
            cache: Some(cache),
            ..pool("builds", &["build"], Mtu::Auto)
        }],
        ..healthy()
    };
    let own = PoolCache {
        size: "50Gi".into(),
        volumes: 4,
        in_use: 3,
        warm: 1,
        ..PoolCache::default()
    };
    let find = |o: &Observations| {
        evaluate(o)
            .into_iter()
            .find(|c| c.name == "cache/ci/builds")
            .unwrap()
    };
    let good = find(&cached(own.clone()));
    assert_eq!(good.verdict, Verdict::Pass);
    assert_eq!(
        good.detail,
        "4 claims of 50Gi on the default class (3 in use, 1 warm)"
    );
    let missing = find(&cached(PoolCache {
        storage_class: Some("fast".into()),
        ..own.clone()
    }));
    assert_eq!(missing.verdict, Verdict::Fail);
    assert!(
        missing.detail.contains("fast is no StorageClass"),
        "{missing:?}"
    );
    let no_default = find(&Observations {
        storage_classes: Some(vec![("ssd".into(), false)]),
        ..cached(own.clone())
    });
    assert_eq!(no_default.verdict, Verdict::Fail);
    let skipped = find(&cached(PoolCache {
        storage_class: Some("ssd".into()),
        skipped: 1,
        ..own.clone()
    }));
    assert_eq!(skipped.verdict, Verdict::Warn);
    assert!(skipped.fix.contains("reason=CacheVolumeUnschedulable"));
    let shared = find(&cached(PoolCache {
        workspace_wide: true,
        ..own.clone()
    }));
    assert_eq!(shared.verdict, Verdict::Warn);
    assert!(shared.fix.contains("spec.repository"));
    // Classes that could not be listed are not held against the pool.
    let unknown = find(&Observations {
        storage_classes: None,
        ..cached(PoolCache {
            storage_class: Some("fast".into()),
            ..own
        })
    });
    assert_eq!(unknown.verdict, Verdict::Pass);
    // A pool without a cache gets no line.
    assert!(
        !evaluate(&healthy())
            .iter()
            .any(|c| c.name.starts_with("cache/"))
    );
}
